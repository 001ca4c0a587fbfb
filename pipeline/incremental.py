"""Incremental runs: score only new or changed recordings, and survive being killed.

With ``--incremental``, the launcher lists the inputs itself, drops every recording that a
committed earlier run into the same ``--output`` already scored (same path, size and
modification time, same model and options), and scores the rest in chunks of
``--incremental_chunk`` recordings, each chunk an ordinary job writing into its own
``parts/<chunk>/`` folder. A chunk is committed by one small manifest file written after its
job succeeded, so a run killed mid-way loses at most the chunk in flight, and a restart
redoes only that. Finally the top-level outputs (``windows-*.parquet``, ``embeddings-*``,
``submission.csv``, ``errors.csv``, ``detections.*``) are rebuilt from every recording's
latest committed chunk: they equal what one full run would write.

The manifest also holds the run's fingerprint (model, classes, windowing, activation, head):
an output folder that holds results of another model or class list is refused, never mixed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable, Iterable, Sequence

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline import graph
from transforms import sinks
from transforms.audio import MatchRecordings
from transforms.detections import DETECTIONS_CSV, DETECTIONS_PARQUET
from transforms.records import FileError

PARTS = 'parts'
MANIFESTS = 'manifest'


@dataclasses.dataclass(frozen=True)
class Recording:
    path: str
    size: int
    mtime: float

    @property
    def stamp(self) -> list:
        return [self.size, round(self.mtime, 3)]


def fingerprint(config: graph.RunConfig) -> dict:
    """What makes two runs' results comparable; any difference forbids mixing them."""
    head = None if config.head is None else {
        'model': config.head.model, 'policy': config.head_policy,
        'weights': hashlib.sha1(config.head.weights.tobytes()).hexdigest()}
    return {'model': config.model.name, 'classes': list(config.mapping.classes),
            'window_s': config.windowing.window_s, 'hop_s': config.windowing.hop_s,
            'activation': config.mapping.activation,
            'sensitivity': config.mapping.sensitivity,
            'missing_class_score': config.mapping.missing_score, 'head': head}


def list_recordings(patterns: Iterable[str]) -> tuple[list[Recording], list[FileError]]:
    """The recordings the patterns match, stamped, and the matching failures (as in a job)."""
    paths, errors = set(), []
    for pattern in patterns:
        for output in MatchRecordings().process(pattern):
            if isinstance(output, beam.pvalue.TaggedOutput):
                errors.append(output.value)
            else:
                paths.add(output)
    stamped = [Recording(m.path, m.size_in_bytes, m.last_updated_in_seconds)
               for result in FileSystems.match(sorted(paths)) for m in result.metadata_list]
    return sorted(stamped, key=lambda r: r.path), errors


def read_manifests(output: str) -> list[dict]:
    pattern = FileSystems.join(output, MANIFESTS, '*.json')
    manifests = []
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(metadata.path) as handle:
            manifests.append(json.loads(handle.read().decode('utf-8')))
    return sorted(manifests, key=lambda m: m['committed'])


def latest_chunks(manifests: Sequence[dict]) -> dict[str, tuple[str, list]]:
    """Each recording's most recent committed chunk and the stamp it was scored at."""
    latest = {}
    for manifest in manifests:  # oldest first: later commits win
        for path, stamp in manifest['recordings'].items():
            latest[path] = (manifest['chunk'], stamp)
    return latest


def check_compatible(manifests: Sequence[dict], current: dict, output: str) -> None:
    for manifest in manifests:
        if manifest['fingerprint'] != current:
            changed = sorted(k for k in current if manifest['fingerprint'].get(k) != current[k])
            raise ValueError(
                f'{output} holds results of a run with other {", ".join(changed)}: '
                'they would mix. Use a new --output for the new model or options.')


def chunk_id(recordings: Sequence[Recording]) -> str:
    digest = hashlib.sha1(json.dumps([[r.path, *r.stamp] for r in recordings]).encode())
    return digest.hexdigest()[:16]


def run_chunks(config: graph.RunConfig, chunk_size: int,
               execute: Callable[[graph.RunConfig], dict[str, int]],
               clock: Callable[[], float]) -> dict:
    """Scores what is new in chunks, commits each, and rebuilds the merged outputs."""
    manifests = read_manifests(config.output)
    current = fingerprint(config)
    check_compatible(manifests, current, config.output)
    latest = latest_chunks(manifests)
    recordings, match_errors = list_recordings(config.inputs)
    todo = [r for r in recordings if latest.get(r.path, (None, None))[1] != r.stamp]
    totals: dict[str, int] = {}
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        name = chunk_id(chunk)
        part = FileSystems.join(config.output, PARTS, name)
        counts = execute(dataclasses.replace(
            config, inputs=tuple(r.path for r in chunk), output=part))
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        manifest = {'chunk': name, 'committed': clock(), 'fingerprint': current,
                    'recordings': {r.path: r.stamp for r in chunk}}
        sinks.write_atomically(FileSystems.join(config.output, MANIFESTS, f'{name}.json'),
                               json.dumps(manifest).encode('utf-8'))
        latest.update({r.path: (name, r.stamp) for r in chunk})
    wanted = {r.path: latest[r.path][0] for r in recordings if r.path in latest}
    merge(config, wanted, match_errors)
    return {'totals': totals, 'recordings': len(recordings), 'skipped': len(recordings) -
            len(todo), 'scored': len(todo)}


def _part_table(config: graph.RunConfig, chunk: str, pattern: str) -> pd.DataFrame | None:
    paths = [m.path for m in FileSystems.match(
        [FileSystems.join(config.output, PARTS, chunk, pattern)])[0].metadata_list]
    frames = []
    for path in sorted(paths):
        with FileSystems.open(path) as handle:
            frames.append(pq.read_table(handle).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else None


def _gather(config: graph.RunConfig, wanted: dict[str, str], pattern: str) -> pd.DataFrame:
    frames = []
    for chunk in sorted(set(wanted.values())):
        frame = _part_table(config, chunk, pattern)
        if frame is not None:
            sources = {path for path, c in wanted.items() if c == chunk}
            frames.append(frame[frame['source'].isin(sources)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge(config: graph.RunConfig, wanted: dict[str, str],
          match_errors: Sequence[FileError]) -> None:
    """Rebuilds the top-level outputs from each recording's chunk, sorted as a full run."""
    windows = _gather(config, wanted, f'{sinks.WINDOWS_PREFIX}-*.parquet')
    if len(windows):
        windows = windows.sort_values(['source', 'end_s'], ignore_index=True)
        _write_parquet(config, f'{sinks.WINDOWS_PREFIX}-00000-of-00001.parquet', windows)
    embeddings = _gather(config, wanted, f'{sinks.EMBEDDINGS_PREFIX}-*.parquet')
    if len(embeddings):
        _write_parquet(config, f'{sinks.EMBEDDINGS_PREFIX}-00000-of-00001.parquet',
                       embeddings.sort_values('row_id', ignore_index=True))
    classes = list(config.mapping.classes)
    rows = sinks.SubmissionRows() if not len(windows) else sinks.SubmissionRows(
        list(windows['source']), list(windows['end_s']), list(windows['row_id']),
        [windows[classes].to_numpy(dtype='float32')])
    frame, _, _ = sinks.submission_frame(rows, classes, config.expected_row_ids,
                                         config.mapping.missing_score)
    sinks.write_csv_atomically(config.path(sinks.SUBMISSION), frame,
                               float_format=sinks.SCORE_FORMAT)
    errors = [sinks.errors_frame(match_errors)]
    detections = []
    for chunk in sorted(set(wanted.values())):
        sources = {path for path, c in wanted.items() if c == chunk}
        for name, found in ((sinks.ERRORS_CSV, errors), (DETECTIONS_CSV, detections)):
            with FileSystems.open(FileSystems.join(config.output, PARTS, chunk, name)) as handle:
                frame = pd.read_csv(handle, keep_default_na=False, dtype=str)
            found.append(frame[frame['source'].isin(sources)])
    _write_csv(config, sinks.ERRORS_CSV, pd.concat(errors, ignore_index=True),
               list(errors[0].columns))
    merged = pd.concat(detections, ignore_index=True) if detections else pd.DataFrame()
    if len(merged):
        merged = merged.assign(_start=merged['start_s'].astype(float),
                               _score=-merged['score'].astype(float))
        _write_csv(config, DETECTIONS_CSV, merged.drop(columns=['_start', '_score']),
                   order=merged.sort_values(['source', '_start', '_score', 'species_code']).index)
    parquet = _gather(config, wanted, DETECTIONS_PARQUET)
    if len(parquet):
        _write_parquet(config, DETECTIONS_PARQUET, parquet.sort_values(
            ['source', 'start_s', 'score', 'species_code'], ascending=[True, True, False, True],
            ignore_index=True))


def _write_csv(config: graph.RunConfig, name: str, frame: pd.DataFrame,
               sort_by: list[str] | None = None, order: pd.Index | None = None) -> None:
    frame = frame.loc[order] if order is not None else frame.sort_values(sort_by)
    sinks.write_csv_atomically(config.path(name), frame)


def _write_parquet(config: graph.RunConfig, name: str, frame: pd.DataFrame) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    sinks.write_atomically(config.path(name), sink.getvalue().to_pybytes())
