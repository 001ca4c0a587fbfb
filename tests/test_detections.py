"""Detections, Raven and Audacity tables, and recorder time: known scores in, exact rows out."""
from __future__ import annotations

import datetime
import os
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import options
from tests.detection_fixtures import HIGH, MYSTERY, run_dc, write_levels
from transforms.detections import (
    SCHEMA, DetectionRule, SelectDetections, Species, audacity_labels, detection_blocks,
    detections_csv, raven_table, safe_stem, species_names, table_stems)
from transforms.recorder_time import RecorderClock, RecorderTime, iso_time
from transforms.records import ScoredWindow

T = datetime.datetime
BARSWA = Species('barswa', 'Hirundo rustica', 'Barn Swallow')
COMSAN = Species('comsan', 'Actitis hypoleucos', 'Common Sandpiper')
MYSTERY1 = Species('mystery1')
RAVEN_HEADER = ('Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\t'
                'High Freq (Hz)\tSpecies Code\tCommon Name\tScore')


# ---------------------------------------------------------------------------- recorder time

@pytest.mark.parametrize('source, recorder, started_at', [
    ('examples/audio/S4A03895_20190522_060000.wav', 'S4A03895', T(2019, 5, 22, 6, 0, 0)),
    ('gs://bucket/site 4/SMM_North_20200101_000001.flac', 'SMM_North', T(2020, 1, 1, 0, 0, 1)),
    ('/data/moth7/20240102_235958.WAV', None, T(2024, 1, 2, 23, 59, 58)),
    ('C:\\field\\20210615_043000.wav', None, T(2021, 6, 15, 4, 30)),
])
def test_built_in_names_give_recorder_and_start(source, recorder, started_at):
    assert RecorderClock().read(source) == RecorderTime(recorder, started_at)


@pytest.mark.parametrize('source', [
    'soundscape_29201.ogg', 'recording.wav', 'S4A03895_20190522.wav', '2019052_060000.wav',
    '20191340_250000.wav',        # digits in the right places, but no such date or time
    'S4A03895_20190230_120000.wav',  # 30 February
    'S4A03895_20190522_060000_extra.wav',
])
def test_names_without_a_real_time_give_nothing(source):
    assert RecorderClock().read(source) == RecorderTime(None, None)


CUSTOM = (r'site(?P<recorder>\d+)-(?P<year>\d{4})-(?P<month>\d\d)-(?P<day>\d\d)'
          r'T(?P<hour>\d\d)h(?P<minute>\d\d)')


def test_a_custom_pattern_replaces_the_built_in_names():
    clock = RecorderClock(CUSTOM)
    assert clock.read('/x/site7-2021-03-04T05h06.flac') == RecorderTime('7', T(2021, 3, 4, 5, 6))
    assert clock.read('/x/20240102_235958.wav') == RecorderTime()  # not this project's naming
    assert clock.read('/x/site7-2021-03-04T05h06-copy.flac') == RecorderTime()  # whole stem
    no_recorder = RecorderClock(r'(?P<year>\d{4})(?P<month>\d\d)(?P<day>\d\d)-(?P<hour>\d\d)'
                                r'(?P<minute>\d\d)(?P<second>\d\d)')
    assert no_recorder.read('20220707-010203.wav') == RecorderTime(None, T(2022, 7, 7, 1, 2, 3))


def test_window_times_are_offsets_from_the_start_in_iso_8601():
    started = RecorderTime('S4A', T(2024, 1, 2, 23, 59, 58))
    assert iso_time(started.at(5.0)) == '2024-01-03T00:00:03'
    assert iso_time(started.at(2.5)) == '2024-01-03T00:00:00.500'
    assert RecorderTime().at(5.0) is None


@pytest.mark.parametrize('pattern, message', [
    (r'(?P<year>\d{4})(?P<month>\d\d)', 'day, hour, minute'),
    (r'(?P<year>\d{4}', 'not a regular expression'),
])
def test_bad_patterns_are_refused(pattern, message):
    with pytest.raises(ValueError, match=message):
        RecorderClock(pattern)


@pytest.mark.parametrize('flags, message', [
    (['--timestamp_pattern', r'(?P<year>\d{4})'], 'lacks the named group(s) month'),
    (['--min_score', '1.5'], 'min_score must be in [0, 1]'),
    (['--top_k', '-1'], 'top_k must be at least 0'),
])
def test_bad_flags_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit):
        options.parse(['--input', 'x.wav', '--output', 'out', *flags])
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------- rules and names

@pytest.mark.parametrize('min_score, top_k, kept', [
    (0.5, 0, [1, 3, 2]),    # threshold alone, best first
    (0.95, 0, []),
    (0.95, 2, [1, 3]),      # top 2 below the threshold
    (0.5, 1, [1, 3, 2]),    # the union: top 1 adds nothing new
    (1.0, 1, [1]),          # just the best
    (0.0, 0, [1, 3, 2, 0]),
])
def test_rule_keeps_the_union_of_threshold_and_top_k(min_score, top_k, kept):
    scores = np.array([0.2, 0.9, 0.5, 0.7], dtype=np.float32)
    assert DetectionRule(min_score, top_k).select(scores).tolist() == kept


def test_rule_breaks_ties_in_class_order():
    assert DetectionRule(0.9, 1).select(np.array([0.5, 0.5], np.float32)).tolist() == [0]


def test_names_come_from_the_ebird_taxonomy():
    assert species_names(['barswa', 'comsan', 'mystery1']) == (BARSWA, COMSAN, MYSTERY1)
    assert MYSTERY1.label == 'mystery1' and BARSWA.label == 'Barn Swallow'


@pytest.mark.parametrize('source, stem', [
    ('a/..', 'recording'), ('..', 'recording'), ('/x/.. .wav', 'recording'),
    ('/x/.hidden.wav', 'hidden'), ('../../etc/passwd', 'passwd'),
    ('C:\\rec\\..\\x y.wav', 'x_y'), ('/x/field notes, "dawn" é.wav', 'field_notes_dawn_é'),
    ('/x/a/b\\c:d*e?.flac', 'c_d_e'), ('/x/' + 'n' * 300 + '.wav', 'n' * 120),
])
def test_safe_stems_cannot_leave_their_folder(source, stem, tmp_path):
    assert safe_stem(source) == stem
    assert (tmp_path / (safe_stem(source) + '.txt')).resolve().parent == tmp_path.resolve()


def test_table_stems_are_distinct_whatever_the_order():
    sources = ['a/rec.wav', 'b/rec.wav', 'c/REC.wav', 'd/rec?.wav', 'e/other.wav']
    stems = table_stems(sources)
    assert stems['a/rec.wav'] == 'rec' and stems['e/other.wav'] == 'other'
    assert len({s.casefold() for s in stems.values()}) == len(sources)
    assert stems['b/rec.wav'].startswith('rec-') and len(stems['b/rec.wav']) == 12
    assert table_stems(reversed(sources)) == stems


# ---------------------------------------------------------------------------- the pipeline

NAMES = {  # file name -> window levels (see detection_fixtures)
    'S4A00001_20240102_030405.wav': [0.75, 0.25, 0.5],
    '20240102_235958.WAV': [0.25, 0.75],
    'field notes, "dawn" é.wav': [0.75],
    '.. .wav': [0.25],
}


@pytest.fixture(scope='module')
def detected(tmp_path_factory) -> pathlib.Path:
    """One run, top 2 or score >= 0.5, with Raven and Audacity tables."""
    root = tmp_path_factory.mktemp('detections')
    (root / 'in').mkdir()
    inputs = [write_levels(root / 'in' / name, levels) for name, levels in NAMES.items()]
    run_dc(inputs, root / 'out', detection_rule=DetectionRule(0.5, 2), raven=True,
           audacity=True)
    return root


def _rows(root: pathlib.Path) -> list[tuple]:
    """The expected detections, in the documented order: source, start, score desc, code."""
    src = {name: str(root / 'in' / name) for name in NAMES}
    dots, moth = src['.. .wav'], src['20240102_235958.WAV']
    meter, field = src['S4A00001_20240102_030405.wav'], src['field notes, "dawn" é.wav']
    return [
        (dots, '.. _5', 0.0, 5.0, None, None, 'comsan', HIGH),
        (dots, '.. _5', 0.0, 5.0, None, None, 'mystery1', MYSTERY),
        (moth, '20240102_235958_5', 0.0, 5.0, T(2024, 1, 2, 23, 59, 58), None, 'comsan', HIGH),
        (moth, '20240102_235958_5', 0.0, 5.0, T(2024, 1, 2, 23, 59, 58), None, 'mystery1',
         MYSTERY),
        (moth, '20240102_235958_10', 5.0, 10.0, T(2024, 1, 3, 0, 0, 3), None, 'barswa', HIGH),
        (moth, '20240102_235958_10', 5.0, 10.0, T(2024, 1, 3, 0, 0, 3), None, 'mystery1',
         MYSTERY),
        (meter, 'S4A00001_20240102_030405_5', 0.0, 5.0, T(2024, 1, 2, 3, 4, 5), 'S4A00001',
         'barswa', HIGH),
        (meter, 'S4A00001_20240102_030405_5', 0.0, 5.0, T(2024, 1, 2, 3, 4, 5), 'S4A00001',
         'mystery1', MYSTERY),
        (meter, 'S4A00001_20240102_030405_10', 5.0, 10.0, T(2024, 1, 2, 3, 4, 10), 'S4A00001',
         'comsan', HIGH),
        (meter, 'S4A00001_20240102_030405_10', 5.0, 10.0, T(2024, 1, 2, 3, 4, 10), 'S4A00001',
         'mystery1', MYSTERY),
        # level 0.5: both exactly 0.5 >= --min_score, so both in; the tie in code order
        (meter, 'S4A00001_20240102_030405_15', 10.0, 15.0, T(2024, 1, 2, 3, 4, 15), 'S4A00001',
         'barswa', 0.5),
        (meter, 'S4A00001_20240102_030405_15', 10.0, 15.0, T(2024, 1, 2, 3, 4, 15), 'S4A00001',
         'comsan', 0.5),
        (field, 'field notes, "dawn" é_5', 0.0, 5.0, None, None, 'barswa', HIGH),
        (field, 'field notes, "dawn" é_5', 0.0, 5.0, None, None, 'mystery1', MYSTERY),
    ]


def test_detections_parquet_has_exactly_the_expected_rows(detected):
    table = pq.read_table(detected / 'out' / 'detections.parquet')
    assert table.schema.names == [
        'source', 'row_id', 'start_s', 'end_s', 'recorded_at', 'recorder', 'species_code',
        'scientific_name', 'common_name', 'score']
    assert table.schema.metadata[b'soundscape.min_score'] == b'0.5'
    assert table.schema.metadata[b'soundscape.top_k'] == b'2'
    rows = table.to_pylist()  # nulls as None, timestamps as datetime
    got = [(r['source'], r['row_id'], r['start_s'], r['end_s'], r['recorded_at'], r['recorder'],
            r['species_code'], pytest.approx(r['score'], rel=1e-6)) for r in rows]
    assert got == _rows(detected)
    names = {r['species_code']: (r['scientific_name'], r['common_name']) for r in rows}
    assert names == {'barswa': ('Hirundo rustica', 'Barn Swallow'),
                     'comsan': ('Actitis hypoleucos', 'Common Sandpiper'), 'mystery1': ('', '')}
    assert 'absent1' not in names  # the model lacks it: score 0


def test_detections_csv_matches_the_parquet(detected):
    text = (detected / 'out' / 'detections.csv').read_text(encoding='utf-8')
    lines = text.splitlines()
    assert lines[0] == ('source,row_id,start_s,end_s,recorded_at,recorder,species_code,'
                        'scientific_name,common_name,score')
    meter = str(detected / 'in' / 'S4A00001_20240102_030405.wav')
    assert f'{meter},S4A00001_20240102_030405_15,10,15,2024-01-02T03:04:15,S4A00001,' \
           f'barswa,Hirundo rustica,Barn Swallow,0.5' in lines
    frame = pd.read_csv(detected / 'out' / 'detections.csv', keep_default_na=False)
    expected = _rows(detected)
    assert frame['source'].tolist() == [r[0] for r in expected]  # commas and quotes survive
    assert frame['row_id'].tolist() == [r[1] for r in expected]
    assert frame['recorded_at'].tolist() == [iso_time(r[4]) if r[4] else '' for r in expected]
    assert frame['recorder'].tolist() == [r[5] or '' for r in expected]
    np.testing.assert_allclose(frame['score'], [r[7] for r in expected], rtol=1e-6)


def test_windows_parquet_carries_recorder_time(detected):
    windows = pd.concat(pd.read_parquet(p) for p in (detected / 'out').glob('windows-*.parquet'))
    windows = windows.set_index('row_id')
    assert list(windows.columns[:6]) == ['source', 'start_s', 'end_s', 'model', 'recorder',
                                         'recorded_at']
    assert windows.loc['20240102_235958_10', 'recorded_at'] == pd.Timestamp('2024-01-03 00:00:03')
    assert pd.isna(windows.loc['20240102_235958_10', 'recorder'])
    assert windows.loc['S4A00001_20240102_030405_15', 'recorder'] == 'S4A00001'
    assert windows.loc['S4A00001_20240102_030405_15', 'recorded_at'] == \
        pd.Timestamp('2024-01-02 03:04:15')
    assert windows.loc[['.. _5', 'field notes, "dawn" é_5'], 'recorded_at'].isna().all()


def test_raven_tables_list_each_recordings_detections(detected):
    raven = detected / 'out' / 'raven'
    assert sorted(p.name for p in raven.iterdir()) == sorted([
        '20240102_235958.selections.txt', 'S4A00001_20240102_030405.selections.txt',
        'field_notes_dawn_é.selections.txt', 'recording.selections.txt'])
    lines = (raven / 'S4A00001_20240102_030405.selections.txt').read_text(
        encoding='utf-8').splitlines()
    row = '{}\tSpectrogram 1\t1\t{}\t{}\t0.0\t4000.0\t{}\t{}\t{}'.format
    assert lines == [
        RAVEN_HEADER,
        row(1, '0.000', '5.000', 'barswa', 'Barn Swallow', '0.9241'),
        row(2, '0.000', '5.000', 'mystery1', '', '0.3775'),
        row(3, '5.000', '10.000', 'comsan', 'Common Sandpiper', '0.9241'),
        row(4, '5.000', '10.000', 'mystery1', '', '0.3775'),
        row(5, '10.000', '15.000', 'barswa', 'Barn Swallow', '0.5000'),
        row(6, '10.000', '15.000', 'comsan', 'Common Sandpiper', '0.5000'),
    ]


def test_audacity_labels_list_each_recordings_detections(detected):
    audacity = detected / 'out' / 'audacity'
    assert sorted(p.name for p in audacity.iterdir()) == sorted([
        '20240102_235958.labels.txt', 'S4A00001_20240102_030405.labels.txt',
        'field_notes_dawn_é.labels.txt', 'recording.labels.txt'])
    assert (audacity / '20240102_235958.labels.txt').read_text(encoding='utf-8') == (
        '0.000000\t5.000000\tCommon Sandpiper (0.92)\n'
        '0.000000\t5.000000\tmystery1 (0.38)\n'
        '5.000000\t10.000000\tBarn Swallow (0.92)\n'
        '5.000000\t10.000000\tmystery1 (0.38)\n')


def test_hostile_names_write_nothing_outside_the_output(detected):
    inside = {detected / 'in', detected / 'out'}
    for folder, _, files in os.walk(detected):
        for name in files:
            path = pathlib.Path(folder, name)
            assert any(parent in inside for parent in path.parents), path
    assert not list((detected / 'out').rglob('*.tmp-*'))  # every temporary renamed


def test_a_later_run_replaces_the_tables_and_reads_a_custom_pattern(detected, tmp_path):
    """Nothing detected: header-only tables; stale tables of an earlier run go."""
    output = tmp_path / 'out'
    for folder, name in (('raven', 'old.selections.txt'), ('audacity', 'old.labels.txt'),
                         ('raven', 'notes.txt')):
        (output / folder).mkdir(parents=True, exist_ok=True)
        (output / folder / name).write_text('from an earlier run')
    inputs = [write_levels(tmp_path / 'site7-2021-03-04T05h06.wav', [0.75]),
              detected / 'in' / '20240102_235958.WAV']
    run_dc(inputs, output, detection_rule=DetectionRule(0.95, 0), raven=True,
           clock=RecorderClock(CUSTOM))

    assert sorted(p.name for p in (output / 'raven').iterdir()) == [
        '20240102_235958.selections.txt', 'notes.txt', 'site7-2021-03-04T05h06.selections.txt']
    assert (output / 'raven' / 'site7-2021-03-04T05h06.selections.txt').read_text() == \
        RAVEN_HEADER + '\n'
    assert list((output / 'audacity').iterdir()) == []
    assert (output / 'detections.csv').read_text().count('\n') == 1  # the header alone
    windows = pd.concat(pd.read_parquet(p) for p in output.glob('windows-*.parquet'))
    windows = windows.set_index('row_id')
    assert windows.loc['site7-2021-03-04T05h06_5', 'recorder'] == '7'
    assert windows.loc['site7-2021-03-04T05h06_5', 'recorded_at'] == \
        pd.Timestamp('2021-03-04 05:06:00')
    assert pd.isna(windows.loc['20240102_235958_5', 'recorded_at'])  # the pattern replaces


def test_table_renderers_handle_no_detections():
    assert raven_table(SCHEMA.empty_table(), 24_000.0) == RAVEN_HEADER + '\n'
    assert audacity_labels(SCHEMA.empty_table()) == ''


def test_table_orders_rows_and_repeats_window_fields_per_detection():
    """Windows arrive in any order; codes break score ties whatever the class order."""
    species = (Species('zzz1'), Species('barswa', 'Hirundo rustica', 'Barn Swallow'),
               Species('aaa1'))
    select = SelectDetections(DetectionRule(0.5, 0))
    windows = [w for source, start, scores in (
        ('b.wav', 0.0, [0.6, 0.9, 0.6]), ('a.wav', 5.0, [0.1, 0.2, 0.3]),
        ('a.wav', 0.0, [0.7, 0.1, 0.8]))
        for w in select.process(ScoredWindow(
            f'{source[0]}_{start + 5:g}', source, start, start + 5.0,
            np.array(scores, np.float32), np.zeros(0, np.float32)))]
    assert len(windows) == 2  # a.wav 5-10 s detected nothing: no record
    table = pa.concat_tables(detection_blocks(windows, species, RecorderClock(),
                                              DetectionRule(0.5, 0)))
    small = list(detection_blocks(windows, species, RecorderClock(), DetectionRule(0.5, 0), 1))
    assert [t.num_rows for t in small] == [2, 3]  # whole windows, in the output order
    assert pa.concat_tables(small).equals(table)
    got = list(zip(*table.select(['row_id', 'start_s', 'species_code', 'common_name',
                                  'score']).to_pydict().values()))
    assert got == [('a_5', 0.0, 'aaa1', '', pytest.approx(0.8)),
                   ('a_5', 0.0, 'zzz1', '', pytest.approx(0.7)),
                   ('b_5', 0.0, 'barswa', 'Barn Swallow', pytest.approx(0.9)),
                   ('b_5', 0.0, 'aaa1', '', pytest.approx(0.6)),
                   ('b_5', 0.0, 'zzz1', '', pytest.approx(0.6))]
    assert detections_csv(table).to_csv(index=False).splitlines()[1:3] == [
        'a.wav,a_5,0,5,,,aaa1,,,0.8', 'a.wav,a_5,0,5,,,zzz1,,,0.7']
