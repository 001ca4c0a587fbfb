"""Planning and decoding: exact window counts and row ids, and the right samples in them."""
from __future__ import annotations

import itertools
import math
import pathlib
import platform

import numpy as np
import pytest
import soxr
from apache_beam.pvalue import TaggedOutput

from tests import audio_fixtures as af
from transforms.audio import DecodeWindows, MatchRecordings, PlanShards, Windowing, row_id
from transforms.heap import bound_native_heap
from transforms.records import FileError, Window

BIRDNET_RATE = 48_000
DATA = pathlib.Path(__file__).parent / 'data'


def decode(path: pathlib.Path | str, windowing: Windowing = Windowing(),
           rate: int = BIRDNET_RATE) -> tuple[list[Window], list[FileError]]:
    """Runs PlanShards and DecodeWindows on one file, outside Beam, in shard order."""
    windows, errors = [], []
    for item in PlanShards(windowing).process(str(path)):
        items = [item] if isinstance(item, TaggedOutput) else \
            DecodeWindows(windowing, rate).process(item)
        for output in items:
            if isinstance(output, TaggedOutput):
                errors.append(output.value)
            else:
                windows.append(output)
    return windows, errors


def reference_windows(signal: np.ndarray, native: int, rate: int, count: int,
                      window_s: float = 5.0) -> np.ndarray:
    """What the windows should hold: the whole signal mixed, resampled at once, sliced, padded."""
    mono = soxr.resample(signal.mean(axis=1), native, rate, quality='HQ')
    size = round(window_s * rate)
    padded = np.zeros(count * size, dtype=np.float32)
    padded[:min(len(mono), len(padded))] = mono[:len(padded)]
    return padded.reshape(count, size)


@pytest.mark.parametrize('seconds, expected', [
    (0.0, 0), (0.2, 1), (0.5, 1), (4.99, 1), (5.0, 1), (5.01, 2), (12.3, 3), (60.0, 12),
    (86_400.0, 17_280)])
def test_window_count(seconds, expected):
    assert Windowing().count(seconds) == expected


def test_overlapping_windows_count_and_ids():
    windowing = Windowing(window_s=5.0, hop_s=2.5)
    assert [windowing.count(s) for s in (3.0, 5.0, 6.0, 10.0)] == [1, 1, 2, 3]
    assert [row_id('a/rec.wav', windowing.end_s(i)) for i in range(3)] == \
        ['rec_5', 'rec_7.5', 'rec_10']


def test_row_id_uses_the_file_stem_and_the_end_second():
    assert row_id('gs://bucket/site 1/soundscape_29201.ogg', 10.0) == 'soundscape_29201_10'
    assert row_id('/x/y/S4A03895_20190522_060000.wav', 5.0) == 'S4A03895_20190522_060000_5'


CASES = [(encoding, rate, channels, seconds)
         for encoding, rate in itertools.product(af.ENCODINGS, af.RATES)
         if af.encodable(encoding, rate)
         for channels, seconds in itertools.product((1, 2), (0.5, 5.0, 12.3))]


@pytest.mark.parametrize('encoding, rate, channels, seconds', CASES)
def test_every_encoding_rate_and_length(tmp_path, encoding, rate, channels, seconds):
    path, signal = af.make_recording(tmp_path, 'soundscape_1', seconds, rate, encoding, channels)
    windows, errors = decode(path)

    count = math.ceil(seconds / 5)
    assert errors == []
    assert [w.row_id for w in windows] == [f'soundscape_1_{5 * (i + 1)}' for i in range(count)]
    assert [(w.start_s, w.end_s) for w in windows] == [(5.0 * i, 5.0 * (i + 1))
                                                       for i in range(count)]
    assert all(w.samples.shape == (5 * BIRDNET_RATE,) and w.samples.dtype == np.float32
               for w in windows)
    got = np.stack([w.samples for w in windows])
    want = reference_windows(signal, rate, BIRDNET_RATE, count)
    if encoding in af.LOSSLESS:
        np.testing.assert_allclose(got, want, atol=2e-3)
        # The padding after the end of the recording is silence.
        end = round(seconds * BIRDNET_RATE) + 200
        assert np.abs(got.reshape(-1)[end:]).max(initial=0) < 1e-3
    else:
        # Lossy codecs change the waveform, not its content: the same tones at the same level.
        audible = slice(0, round(seconds * BIRDNET_RATE))
        g, w = got.reshape(-1)[audible], want.reshape(-1)[audible]
        assert np.corrcoef(g, w)[0, 1] > 0.9
        assert 0.8 < np.sqrt(np.mean(g ** 2) / np.mean(w ** 2)) < 1.2


def test_stereo_is_mixed_to_the_mean_of_its_channels(tmp_path):
    signal = np.stack([np.full(48_000, 0.5), np.full(48_000, -0.1)], axis=1).astype(np.float32)
    path = af.write(tmp_path / 'dc.wav', signal, 48_000)
    (window,), _ = decode(path)
    np.testing.assert_allclose(window.samples[:48_000], 0.2, atol=1e-6)
    np.testing.assert_array_equal(window.samples[48_000:], 0.0)


@pytest.mark.parametrize('encoding, tolerance', [('flac', 1e-4), ('mp3', 2e-3)])
def test_shards_decode_the_same_windows_as_the_whole_file(tmp_path, encoding, tolerance):
    path, _ = af.make_recording(tmp_path, 'long', 130.0, 44_100, encoding)
    whole, _ = decode(path, Windowing(shard_s=600.0))
    for shard_s in (15.0, 60.0):
        sharded, errors = decode(path, Windowing(shard_s=shard_s))
        assert errors == []
        assert [w.row_id for w in sharded] == [w.row_id for w in whole]
        np.testing.assert_allclose(np.stack([w.samples for w in sharded]),
                                   np.stack([w.samples for w in whole]), atol=tolerance)


def test_planning_reads_the_header_only_and_splits_into_shards(tmp_path):
    path, _ = af.make_recording(tmp_path, 'rec', 130.0, 8_000, 'wav16')
    shards = list(PlanShards(Windowing(shard_s=60.0)).process(str(path)))
    assert [(s.first_window, s.num_windows) for s in shards] == [(0, 12), (12, 12), (24, 2)]
    assert {(s.sample_rate, s.channels, s.total_frames) for s in shards} == {(8_000, 1, 1_040_000)}


@pytest.mark.parametrize('name', ['21100_36_48.flac', '21100_36_48.mp3', '21100_36_48.ogg',
                                  '21100_36_48.opus'])
def test_real_encoded_clip_decodes_like_its_lossless_copy(name):
    lossless, _ = decode(DATA / '21100_36_48.flac')
    windows, errors = decode(DATA / name)
    assert errors == []
    assert [w.row_id for w in windows] == ['21100_36_48_5', '21100_36_48_10']
    got, want = (np.concatenate([w.samples for w in ws]) for ws in (windows, lossless))
    assert np.corrcoef(got, want)[0, 1] > 0.9


def test_non_finite_samples_are_zeroed_and_recorded(tmp_path):
    signal = af.tone_signal(6.0, 16_000)
    signal[100:110] = np.nan
    signal[200] = np.inf
    path = af.write(tmp_path / 'nan.wav', signal, 16_000)
    windows, errors = decode(path)
    assert len(windows) == 2
    assert all(np.isfinite(w.samples).all() for w in windows)
    assert [(e.stage, e.error) for e in errors] == [('decode', 'ValueError')]
    assert '11 NaN/Inf samples' in errors[0].message


@pytest.mark.parametrize('encoding, cause', [('flac', 'LibsndfileError'), ('mp3', None)])
def test_truncated_file_keeps_the_windows_it_has(tmp_path, encoding, cause):
    path = af.write(tmp_path / f'cut.{af.ENCODINGS[encoding][2]}',
                    af.tone_signal(20.0, 16_000), 16_000, encoding)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 7 // 20])  # the header says 20 s; ~7 s remain
    windows, errors = decode(path)
    assert [w.row_id for w in windows] == ['cut_5', 'cut_10']
    assert [(e.stage, e.error) for e in errors] == [('decode', 'EOFError')]
    assert 'the header declares 20.00 s: 2 window(s) from 10 s lost' in errors[0].message
    assert (f'({cause}: ' in errors[0].message) == (cause is not None)


def test_unreadable_file_is_an_error_not_a_crash(tmp_path):
    path = tmp_path / 'notes.wav'
    path.write_text('not audio at all')
    windows, errors = decode(path)
    assert windows == []
    assert [(e.source, e.stage, e.error, e.message) for e in errors] == [
        (str(path), 'plan', 'LibsndfileError', 'Format not recognised.')]


def test_matching_records_empty_patterns_and_other_extensions(tmp_path):
    af.make_recording(tmp_path, 'a', 1.0, 8_000, 'flac')
    (tmp_path / 'readme.txt').write_text('hello')
    outputs = list(MatchRecordings().process(str(tmp_path / '*')))
    paths = [o for o in outputs if isinstance(o, str)]
    errors = [o.value for o in outputs if isinstance(o, TaggedOutput)]
    assert paths == [str(tmp_path / 'a.flac')]
    assert [(pathlib.Path(e.source).name, e.stage) for e in errors] == [('readme.txt', 'match')]
    (nothing,) = MatchRecordings().process(str(tmp_path / '*.ogg'))
    assert nothing.value.stage == 'match' and 'no file matches' in nothing.value.message


def test_native_heap_thresholds_are_fixed_on_glibc():
    """Decoding workers and the launcher fix glibc's mmap threshold (transforms/heap.py);
    without it a day-long recording's resident memory grew with its length."""
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('glibc only: elsewhere nothing is changed')
    assert bound_native_heap()
