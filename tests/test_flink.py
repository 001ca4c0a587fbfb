"""Portability: the same job on DirectRunner and on a real Apache Flink engine, same outputs.

`scripts/flink.sh` fetches the jars (once, into the cache) and starts a standalone Flink
cluster (JobManager and TaskManager processes), Beam's Flink job server and a pool of Python
SDK workers (the EXTERNAL environment); the job then runs through `--runner FlinkRunner`.
Without Java, Maven or the jars this module is skipped, except where `CI` or
`SOUNDSCAPE_REQUIRE_FLINK=1` is set: there it fails.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline.run import run
from tests import audio_fixtures as af

pytestmark = pytest.mark.flink

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'scripts' / 'flink.sh'
EXAMPLES = sorted((ROOT / 'examples' / 'audio').glob('*.wav'))
LONG_S = 130.0  # three 60 s shards
COUNTERS = ('files', 'windows', 'audio_seconds', 'errors')


def _required() -> bool:
    return (os.environ.get('CI', '').lower() not in ('', '0', 'false', 'no')
            or os.environ.get('SOUNDSCAPE_REQUIRE_FLINK') == '1')


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f'Flink is required here (CI or SOUNDSCAPE_REQUIRE_FLINK=1): {reason}')
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


@pytest.fixture(scope='module')
def flink(tmp_path_factory):
    """A running cluster, job server and worker pool: the pipeline flags that reach them."""
    java = pathlib.Path(os.environ['JAVA_HOME'], 'bin', 'java') if os.environ.get(
        'JAVA_HOME') else shutil.which('java')
    if not java or not os.access(java, os.X_OK):
        _unavailable('no Java (needed by Flink and the Beam job server)')
    env = {**os.environ, 'FLINK_RUN_DIR': str(tmp_path_factory.mktemp('flink')),
           'FLINK_REST_PORT': str(_free_port()), 'FLINK_RPC_PORT': str(_free_port()),
           'BEAM_JOB_PORT': str(_free_port()), 'BEAM_WORKER_POOL_PORT': str(_free_port()),
           'FLINK_SLOTS': '2', 'PYTHON': sys.executable}
    fetched = subprocess.run([str(SCRIPT), 'fetch'], env=env, capture_output=True, text=True,
                             timeout=900, check=False)
    if fetched.returncode != 0:
        _unavailable(f'no Flink jars: {fetched.stderr.strip()[-1500:]}')
    try:
        started = subprocess.run([str(SCRIPT), 'start'], env=env, capture_output=True,
                                 text=True, timeout=300, check=False)
        assert started.returncode == 0, f'scripts/flink.sh start failed:\n{started.stderr}'
        endpoints = dict(line.split('=', 1) for line in started.stdout.splitlines()
                         if '=' in line)
        yield endpoints['PIPELINE_FLAGS'].split()
    finally:
        subprocess.run([str(SCRIPT), 'stop'], env=env, capture_output=True, timeout=120,
                       check=False)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory) -> list[str]:
    """The shipped examples, a recording of several shards, and a broken file."""
    folder = tmp_path_factory.mktemp('inputs')
    af.make_recording(folder, 'long_recording', LONG_S, 44100, 'flac', channels=2, seed=7)
    (folder / 'broken.flac').write_bytes(b'fLaC' + bytes(100))
    return ['--input', str(ROOT / 'examples' / 'audio' / '*.wav'),
            '--input', str(folder / '*.flac')]


def _timed_run(argv: list[str]) -> tuple[dict, float]:
    started = time.perf_counter()
    summary = run(argv)
    return summary, time.perf_counter() - started


def _windows(output: pathlib.Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted(output.glob('windows-*.parquet'))]
    return pd.concat(frames).sort_values('row_id', ignore_index=True)


def test_flink_and_direct_runner_write_the_same_outputs(flink, inputs, tmp_path):
    direct, flinked = tmp_path / 'direct', tmp_path / 'flink'
    direct_summary, direct_s = _timed_run([*inputs, '--output', str(direct)])
    flink_summary, flink_s = _timed_run([*inputs, '--output', str(flinked), *flink,
                                         '--parallelism', '2'])
    print(f'\nwall time, same inputs: DirectRunner {direct_s:.1f} s, '
          f'FlinkRunner {flink_s:.1f} s ({" ".join(flink)} --parallelism 2)')

    assert (direct_summary['runner'], flink_summary['runner']) == ('DirectRunner', 'FlinkRunner')
    long_windows = int(LONG_S // 5)
    assert direct_summary['files'] == len(EXAMPLES) + 1
    assert direct_summary['windows'] == 2 * len(EXAMPLES) + long_windows
    assert sum(direct_summary['errors'].values()) == 1
    # The counters come back from Flink's metrics, and run.json records them.
    flink_json = json.loads((flinked / 'run.json').read_text())
    direct_json = json.loads((direct / 'run.json').read_text())
    assert {k: flink_json[k] for k in COUNTERS} == {k: direct_json[k] for k in COUNTERS}

    assert (flinked / 'submission.csv').read_bytes() == (direct / 'submission.csv').read_bytes()
    assert (flinked / 'errors.csv').read_bytes() == (direct / 'errors.csv').read_bytes()
    assert 'broken.flac' in (direct / 'errors.csv').read_text()
    pd.testing.assert_frame_equal(_windows(flinked), _windows(direct), check_exact=True)
    assert len(_windows(direct)) == direct_summary['windows']
    # Every other CSV table the job writes too.
    csvs = sorted(p.name for p in direct.glob('*.csv'))
    assert sorted(p.name for p in flinked.glob('*.csv')) == csvs
    for name in csvs:
        assert (flinked / name).read_bytes() == (direct / name).read_bytes(), name
