"""Whole runs: the README's command on the shipped examples, and a mixed bag of inputs."""
from __future__ import annotations

import dataclasses
import json
import pickle
import pathlib
import subprocess

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import graph
from pipeline.run import run
from tests import audio_fixtures as af
from transforms import sinks
from transforms.audio import Windowing
from transforms.classes import ClassMapping, load_classes
from transforms.models.base import ModelSpec
from transforms.records import ScoredWindow

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / 'examples' / 'audio').glob('*.wav'))
IN_PROCESS = ['--runner', 'FnApiRunner', '--direct_running_mode', 'in_memory']


def read_windows(output: pathlib.Path, prefix: str = 'windows') -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted(output.glob(f'{prefix}-*.parquet'))]
    return pd.concat(frames).sort_values('row_id', ignore_index=True)


def test_readme_command_scores_the_examples(tmp_path):
    """`./run_local.sh` as a new user runs it: every output file, checked."""
    result = subprocess.run([str(ROOT / 'run_local.sh'), '--output', str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Scored 4 files, 8 windows' in result.stdout

    stems = [p.stem for p in EXAMPLES]
    expected_ids = [f'{stem}_{end}' for stem in stems for end in (5, 10)]
    classes = load_classes()
    submission = pd.read_csv(tmp_path / 'submission.csv')
    assert list(submission.columns) == ['row_id'] + classes
    assert submission['row_id'].tolist() == expected_ids
    scores = submission[classes].to_numpy()
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()

    windows = read_windows(tmp_path)
    assert sorted(windows['row_id']) == sorted(expected_ids)
    assert list(windows.columns[:7]) == ['row_id', 'source', 'start_s', 'end_s', 'model',
                                         'recorder', 'recorded_at']
    assert set(windows['model']) == {'birdnet-v2.4'}
    assert {pathlib.Path(s).name for s in windows['source']} == {p.name for p in EXAMPLES}
    assert sorted(zip(windows['start_s'], windows['end_s'])) == sorted([(0.0, 5.0), (5.0, 10.0)] * 4)
    merged = windows.set_index('row_id').loc[submission['row_id'], classes].to_numpy()
    np.testing.assert_allclose(merged, scores, rtol=1e-6)  # the CSV keeps 7 digits

    assert pd.read_csv(tmp_path / 'errors.csv').empty
    summary = json.loads((tmp_path / 'run.json').read_text())
    assert (summary['files'], summary['windows'], summary['audio_seconds']) == (4, 8, 40.0)
    assert summary['model']['name'] == 'birdnet-v2.4'
    assert len(summary['missing_classes']) == 39 and summary['errors'] == {}
    assert summary['versions']['apache-beam'] == '2.77.0'
    # The missing classes get the missing score; BirdNET's own classes do not all sit there.
    missing = submission[summary['missing_classes']].to_numpy()
    assert (missing == 0.0).all()


class LevelModel:
    """A stand-in model: logits are known functions of the window's level and position."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rms = np.sqrt(np.mean(batch ** 2, axis=1))
        logits = np.stack([10 * rms - 1, -10 * rms, np.full_like(rms, 2.0)], axis=1)
        return logits.astype(np.float32), rms[:, None].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LevelSpec(ModelSpec):
    def load(self) -> LevelModel:
        return LevelModel()


LEVEL = LevelSpec(name='level', sample_rate=16_000, labels=('loud1', 'quiet1', 'const1'),
                  window_s=None, embedding_dim=1)


def test_mixed_inputs_every_window_accounted_for(tmp_path):
    """Many encodings, rates and lengths plus bad files in one job: rows out = windows in."""
    audio = tmp_path / 'in'
    audio.mkdir()
    expected = {}
    cases = [('wav16', 8000, 1, 0.5), ('flac', 22050, 2, 5.0), ('ogg', 44100, 1, 12.3),
             ('mp3', 48000, 2, 7.0), ('opus', 16000, 1, 61.0), ('wavfloat', 96000, 1, 5.0)]
    for i, (encoding, rate, channels, seconds) in enumerate(cases):
        af.make_recording(audio, f'rec_{i}', seconds, rate, encoding, channels, seed=i)
        expected.update({f'rec_{i}_{5 * (k + 1)}': i for k in range(int(np.ceil(seconds / 5)))})
    (audio / 'broken.flac').write_bytes(b'fLaC' + bytes(100))
    (audio / 'notes.txt').write_text('field notes')
    output = tmp_path / 'out'
    output.mkdir()
    config = graph.RunConfig(
        inputs=(str(audio / '*'), str(audio / 'rec_0.wav'), str(tmp_path / 'none*.wav')),
        output=str(output), model=LEVEL,
        mapping=ClassMapping.build(['const1', 'loud1', 'absent1'], LEVEL.labels),
        windowing=Windowing(shard_s=15.0), write_embeddings=True)
    with beam.Pipeline(options=PipelineOptions(IN_PROCESS)) as pipeline:
        graph.build(pipeline, config)

    submission = pd.read_csv(output / 'submission.csv')
    # Ordered by file, then by end second; rec_0.wav matched twice is scored once.
    assert submission['row_id'].tolist() == sorted(
        expected, key=lambda r: (expected[r], int(r.rsplit('_', 1)[1])))
    windows = read_windows(output)
    assert sorted(windows['row_id']) == sorted(expected)
    np.testing.assert_allclose(submission['const1'], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_array_equal(submission['absent1'], 0.0)
    embeddings = read_windows(output, 'embeddings').set_index('row_id')
    rms = np.stack(embeddings.loc[submission['row_id'], 'embedding'].to_numpy())[:, 0]
    np.testing.assert_allclose(submission['loud1'], 1 / (1 + np.exp(-(10 * rms - 1))), rtol=1e-5)
    assert rms[submission['row_id'].tolist().index('rec_1_5')] > 0.1  # stereo, audible

    errors = pd.read_csv(output / 'errors.csv')
    assert sorted(zip(errors['source'].map(lambda s: pathlib.Path(s).name), errors['stage'])) == [
        ('broken.flac', 'plan'), ('none*.wav', 'match'), ('notes.txt', 'match')]


def test_sample_submission_fixes_rows_and_columns(tmp_path):
    """Kaggle's layout exactly: every expected row, even for a file that failed."""
    bad = tmp_path / 'soundscape_9.ogg'
    bad.write_bytes(b'OggS' + bytes(64))
    stem = EXAMPLES[0].stem
    expected_ids = ['soundscape_9_5', f'{stem}_10', f'{stem}_5', 'soundscape_9_10']
    sample = pd.DataFrame({'row_id': expected_ids, 'barswa': 0.0, 'sacibi2': 0.0,
                           'comsan': 0.0})
    sample.to_csv(tmp_path / 'sample_submission.csv', index=False)
    output = tmp_path / 'out'
    summary = run(['--input', str(EXAMPLES[0]), '--input', str(bad), '--output', str(output),
                   '--sample_submission', str(tmp_path / 'sample_submission.csv'),
                   '--missing_class_score', '0.125', *IN_PROCESS])

    submission = pd.read_csv(output / 'submission.csv')
    assert list(submission.columns) == ['row_id', 'barswa', 'sacibi2', 'comsan']
    assert submission['row_id'].tolist() == expected_ids
    failed = submission[submission['row_id'].str.startswith('soundscape_9')]
    assert (failed[['barswa', 'sacibi2', 'comsan']].to_numpy() == 0.125).all()
    assert (submission['sacibi2'] == 0.125).all()  # BirdNET lacks the Sacred Ibis code
    scored = submission[submission['row_id'].str.startswith(stem)]
    assert (scored[['barswa', 'comsan']].to_numpy() != 0.125).all()
    assert summary['missing_classes'] == ['sacibi2'] and summary['files'] == 1
    errors = pd.read_csv(output / 'errors.csv')
    assert errors[['stage']].to_dict('records') == [{'stage': 'plan'}]
    assert errors['source'].tolist() == [str(bad)]


def test_a_second_run_replaces_the_first(tmp_path):
    for inputs in ([str(p) for p in EXAMPLES], [str(EXAMPLES[0])]):
        run([arg for path in inputs for arg in ('--input', path)]
            + ['--output', str(tmp_path), *IN_PROCESS])
    assert len(read_windows(tmp_path)) == 2
    assert len(pd.read_csv(tmp_path / 'submission.csv')) == 2


@pytest.mark.parametrize('flags, message', [
    (['--model', 'perch'], '--model perch needs --model_handle'),
    (['--batch_size', '0'], '--batch_size must be at least 1'),
])
def test_bad_flags_are_refused(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        run(['--input', str(EXAMPLES[0]), '--output', str(tmp_path), *flags])
    assert message in capsys.readouterr().err


def test_submission_rows_gather_in_any_grouping_and_order():
    """Two workers' compacted parts merge, in either order, into the same ordered table."""
    windows = [ScoredWindow(f'{stem}_{end}', f'{stem}.wav', end - 5.0, float(end),
                            np.array([end, 10 * end, k], np.float32), np.zeros(0, np.float32))
               for k, (stem, end) in enumerate([('b', 5), ('a', 10), ('b', 15), ('a', 5),
                                                ('b', 10)])]
    gather = sinks.GatherSubmissionRows()

    def part(chunk):
        rows = gather.create_accumulator()
        for window in chunk:
            rows = gather.add_input(rows, window)
        return pickle.loads(pickle.dumps(gather.compact(rows)))  # as it crosses workers

    for parts in ([part(windows[:2]), part(windows[2:])], [part(windows[2:]), part(windows[:2])]):
        rows = gather.extract_output(gather.merge_accumulators(parts))
        frame, filled, dropped = sinks.submission_frame(rows, ['x', 'y', 'z'], None, 0.0)
        assert list(frame['row_id']) == ['a_5', 'a_10', 'b_5', 'b_10', 'b_15']
        assert frame[['x', 'y', 'z']].to_numpy().tolist() == [
            [5, 50, 3], [10, 100, 1], [5, 50, 0], [10, 100, 4], [15, 150, 2]]
        assert (filled, dropped) == (0, 0)
    empty = gather.extract_output(gather.create_accumulator())
    assert sinks.submission_frame(empty, ['x'], None, 0.0)[0].shape == (0, 2)
