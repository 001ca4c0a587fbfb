"""A corpus of bad recordings, generated: each is reported, and the good files lose nothing."""
from __future__ import annotations

import pathlib

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput

from pipeline import graph
from tests import audio_fixtures as af
from tests.test_end_to_end import LEVEL, read_windows
from transforms.audio import DecodeWindows, PlanShards, Windowing
from transforms.classes import ClassMapping

IN_PROCESS = PipelineOptions(['--runner', 'FnApiRunner', '--direct_running_mode', 'in_memory'])
PNG = bytes.fromhex('89504e470d0a1a0a0000000d49484452') + bytes(64)


def good_files(directory: pathlib.Path) -> None:
    """Odd but valid recordings: all must be scored."""
    af.make_recording(directory, 'short_0.2s', 0.2, 16_000, 'flac')
    af.make_recording(directory, 'six_channels', 7.0, 48_000, 'wav24', channels=6)
    af.make_recording(directory, 'rate_192k', 6.0, 192_000, 'wavfloat')
    af.make_recording(directory, 'rate_8k', 11.0, 8_000, 'wav16')
    af.make_recording(directory, 'bird, "quoted" naïve é', 5.0, 22_050, 'ogg')
    af.make_recording(directory, 'plain', 12.3, 44_100, 'mp3')


def truncate(path: pathlib.Path, fraction: float, suffix: str) -> pathlib.Path:
    data = path.read_bytes()
    cut = path.with_name(f'{path.stem}_{suffix}{path.suffix}')
    cut.write_bytes(data[:int(len(data) * fraction)])
    path.unlink()
    return cut


def bad_files(directory: pathlib.Path) -> dict[str, tuple[str, str, str]]:
    """Writes the bad cases; returns file name -> (stage, error, words of the message)."""
    rng = np.random.default_rng(7)  # "random" truncation points, the same every run
    expected = {}
    (directory / 'zero_bytes.wav').write_bytes(b'')
    expected['zero_bytes.wav'] = ('plan', 'LibsndfileError', 'Format not recognised')
    af.write(directory / 'header_only.wav', np.zeros((0, 1), np.float32), 16_000, 'wav16')
    expected['header_only.wav'] = ('plan', 'ValueError', 'no audio frames')
    (directory / 'notes.wav').write_text('field notes, not audio')
    expected['notes.wav'] = ('plan', 'LibsndfileError', 'Format not recognised')
    (directory / 'picture.flac').write_bytes(PNG)
    expected['picture.flac'] = ('plan', 'LibsndfileError', 'Format not recognised')
    (directory / 'voice_memo.m4a').write_bytes(b'\x00\x00\x00\x20ftypM4A ' + bytes(64))
    expected['voice_memo.m4a'] = ('match', 'ValueError', "unsupported extension '.m4a'")
    (directory / 'folder.wav').mkdir()
    expected['folder.wav'] = ('match', 'IsADirectoryError', 'a folder, not a recording')

    for encoding, seconds in (('ogg', 30.0), ('opus', 30.0)):
        path, _ = af.make_recording(directory, f'cut_{encoding}', seconds, 48_000, encoding)
        name = truncate(path, rng.uniform(0.3, 0.8), 'mid').name
        expected[name] = ('plan', 'EOFError', 'no end-of-stream page')
    path, _ = af.make_recording(directory, 'cut_wav', 30.0, 16_000, 'wav16')
    expected[truncate(path, rng.uniform(0.3, 0.8), 'mid').name] = (
        'plan', 'EOFError', 'the WAV header declares')
    path, _ = af.make_recording(directory, 'cut_flac', 30.0, 16_000, 'flac')
    expected[truncate(path, rng.uniform(0.3, 0.8), 'mid').name] = (
        'decode', 'EOFError', 'LibsndfileError')
    path, _ = af.make_recording(directory, 'cut_mp3', 30.0, 16_000, 'mp3')
    expected[truncate(path, rng.uniform(0.3, 0.8), 'mid').name] = (
        'decode', 'EOFError', 'window(s) from')
    path, _ = af.make_recording(directory, 'cut_flac', 30.0, 16_000, 'flac')
    expected[truncate(path, 0.001, 'header').name] = ('decode', 'EOFError', 'LibsndfileError')

    signal = af.tone_signal(8.0, 16_000)
    signal[1000:1100] = np.nan
    signal[40_000] = -np.inf
    af.write(directory / 'nan_inf.wav', signal, 16_000)
    expected['nan_inf.wav'] = ('decode', 'ValueError', '101 NaN/Inf samples')
    return expected


def run(directory: pathlib.Path, output: pathlib.Path) -> None:
    output.mkdir()
    config = graph.RunConfig(
        inputs=(str(directory / '*'),), output=str(output), model=LEVEL,
        mapping=ClassMapping.build(['loud1', 'quiet1'], LEVEL.labels),
        windowing=Windowing(shard_s=15.0))
    with beam.Pipeline(options=IN_PROCESS) as pipeline:
        graph.build(pipeline, config)


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp('corpus')
    good, mixed = root / 'good', root / 'mixed'
    good.mkdir()
    mixed.mkdir()
    good_files(good)
    good_files(mixed)
    expected = bad_files(mixed)
    outputs = {'good': root / 'out_good', 'mixed': root / 'out_mixed',
               'again': root / 'out_again'}
    run(good, outputs['good'])
    run(mixed, outputs['mixed'])
    run(good, outputs['again'])
    return {**outputs, 'expected': expected}


def test_every_bad_file_is_reported_with_its_stage_and_cause(runs):
    errors = pd.read_csv(runs['mixed'] / 'errors.csv', keep_default_na=False)
    reported: dict[str, list[tuple[str, str, str]]] = {}
    for source, stage, error, message in errors.itertuples(index=False):
        reported.setdefault(pathlib.Path(source).name, []).append((stage, error, message))
    assert set(reported) == set(runs['expected'])
    for name, (stage, error, words) in runs['expected'].items():
        # A file fails once, or once per shard when its data stops early.
        assert all(row[:2] == (stage, error) and words in row[2] for row in reported[name]), \
            (name, reported[name])


def test_good_files_are_scored_exactly_as_without_the_bad_ones(runs):
    alone = read_windows(runs['good'])
    mixed = read_windows(runs['mixed'])
    good_ids = set(alone['row_id'])
    assert len(alone) == 1 + 2 + 2 + 3 + 1 + 3  # 0.2 s, 7 s, 6 s, 11 s, 5 s, 12.3 s
    pd.testing.assert_frame_equal(
        mixed[mixed['row_id'].isin(good_ids)].reset_index(drop=True)
        .drop(columns='source'), alone.drop(columns='source'))
    assert "bird, \"quoted\" naïve é_5" in good_ids


def test_truncated_files_keep_their_readable_windows(runs):
    mixed = read_windows(runs['mixed'])
    for stem in ('cut_ogg_mid', 'cut_opus_mid', 'cut_wav_mid', 'cut_flac_mid', 'cut_mp3_mid'):
        ids = sorted(mixed.loc[mixed['row_id'].str.startswith(stem), 'end_s'])
        assert ids[:1] == [5.0] and 1 <= len(ids) < 6, (stem, ids)


def test_no_score_is_nan_and_csv_quoting_survives_names(runs):
    submission = pd.read_csv(runs['mixed'] / 'submission.csv')
    assert np.isfinite(submission[['loud1', 'quiet1']].to_numpy()).all()
    assert "bird, \"quoted\" naïve é_5" in set(submission['row_id'])
    assert submission['row_id'].is_unique


def test_the_same_inputs_give_byte_identical_outputs(runs):
    first = (runs['good'] / 'submission.csv').read_bytes()
    assert first == (runs['again'] / 'submission.csv').read_bytes()
    pd.testing.assert_frame_equal(read_windows(runs['good']), read_windows(runs['again']))


def test_a_file_that_disappears_after_matching_or_planning(tmp_path):
    path, _ = af.make_recording(tmp_path, 'gone', 6.0, 16_000)
    (shard,) = PlanShards(Windowing()).process(str(path))
    path.unlink()
    (after_planning,) = DecodeWindows(Windowing(), 16_000).process(shard)
    (after_matching,) = PlanShards(Windowing()).process(str(path))
    for output, stage in ((after_planning, 'decode'), (after_matching, 'plan')):
        assert isinstance(output, TaggedOutput)
        assert (output.value.stage, output.value.error) == (stage, 'FileNotFoundError')
