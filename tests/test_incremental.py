"""Incremental runs: only new or changed recordings are scored, and a killed run resumes."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipeline.run import run
from tests import audio_fixtures as af
from tests.test_end_to_end import EXAMPLES, IN_PROCESS, read_windows

ROOT = pathlib.Path(__file__).resolve().parent.parent


def recordings(directory: pathlib.Path, count: int) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for example in EXAMPLES[:count]:
        shutil.copy(example, directory)
    return directory


def score(inputs: pathlib.Path, output: pathlib.Path, *flags: str) -> dict:
    return run(['--input', str(inputs / '*'), '--output', str(output), *IN_PROCESS, *flags])


def same_outputs(got: pathlib.Path, want: pathlib.Path) -> None:
    assert (got / 'submission.csv').read_bytes() == (want / 'submission.csv').read_bytes()
    columns = read_windows(want).columns
    pd.testing.assert_frame_equal(read_windows(got)[columns], read_windows(want))
    pd.testing.assert_frame_equal(pd.read_csv(got / 'errors.csv'), pd.read_csv(want / 'errors.csv'))


def test_new_and_changed_recordings_only(tmp_path):
    audio = recordings(tmp_path / 'audio', 3)
    (audio / 'broken.wav').write_text('not audio')
    output = tmp_path / 'out'
    first = score(audio, output, '--incremental', '--incremental_chunk', '2')
    assert first['incremental'] == {'recordings': 4, 'skipped': 0, 'scored': 4}
    score(audio, tmp_path / 'full')
    same_outputs(output, tmp_path / 'full')

    again = score(audio, output, '--incremental')
    assert again['incremental']['scored'] == 0 and again['windows'] == 0
    same_outputs(output, tmp_path / 'full')

    shutil.copy(EXAMPLES[3], audio)  # a new recording
    changed = audio / EXAMPLES[0].name  # and one rewritten: another size and time
    af.write(changed, af.tone_signal(12.0, 22_000), 22_000, 'wav16')
    later = score(audio, output, '--incremental')
    assert later['incremental'] == {'recordings': 5, 'skipped': 3, 'scored': 2}
    score(audio, tmp_path / 'full2')
    same_outputs(output, tmp_path / 'full2')
    assert len(read_windows(output)) == 2 + 2 + 2 + 3  # no stale rows of the old version


def test_another_model_option_is_refused(tmp_path):
    audio = recordings(tmp_path / 'audio', 1)
    score(audio, tmp_path / 'out', '--incremental')
    with pytest.raises(ValueError, match='other activation'):
        score(audio, tmp_path / 'out', '--incremental', '--activation', 'softmax')


def test_a_killed_run_resumes_without_redoing_or_duplicating(tmp_path):
    audio = recordings(tmp_path / 'audio', 4)
    for i in range(4):
        af.make_recording(audio, f'extra_{i}', 7.0, 16_000, 'flac', seed=i)
    output = tmp_path / 'out'
    command = [sys.executable, '-m', 'pipeline.run', '--input', str(audio / '*'), '--output',
               str(output), '--incremental', '--incremental_chunk', '1', *IN_PROCESS]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    manifests = output / 'manifest'
    deadline = time.monotonic() + 300
    while len(list(manifests.glob('*.json'))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, 'finished before it could be killed'
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = {p.name: p.stat().st_mtime_ns for p in manifests.glob('*.json')}
    assert 2 <= len(committed) < 8

    resumed = score(audio, output, '--incremental', '--incremental_chunk', '1')
    assert resumed['incremental']['skipped'] == len(committed)
    assert resumed['incremental']['scored'] == 8 - len(committed)
    assert {p.name: p.stat().st_mtime_ns for p in manifests.glob('*.json')
            if p.name in committed} == committed  # finished chunks were not redone
    score(audio, tmp_path / 'full')
    same_outputs(output, tmp_path / 'full')
    summary = json.loads((output / 'run.json').read_text())
    assert summary['incremental']['recordings'] == 8
