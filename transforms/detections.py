"""Detections: the (window, species) pairs worth a listen, as tables people open directly.

``windows-*.parquet`` holds every score of every window: complete, but 264 columns wide and
mostly near zero. A detection is one window and one species that passed the run's
``DetectionRule``; there are few of them, so they are gathered on one worker, ordered, and
written as

- ``detections.parquet`` and ``detections.csv``: long format, one row per detection, with the
  species' names and, where the file name says when the recording started, the local time;
- with ``raven``: ``raven/<stem>.selections.txt``, a Raven Pro selection table per recording;
- with ``audacity``: ``audacity/<stem>.labels.txt``, an Audacity label track per recording.

Every recording that produced windows gets its tables, empty when nothing was detected, so
"nothing heard" and "not analysed" look different. File names come from recording names
through ``table_stems``, which keeps them inside the output folder whatever the name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from typing import Callable, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.classes import ebird_taxonomy
from transforms.recorder_time import RecorderClock, file_stem, iso_time
from transforms.records import ScoredWindow
from transforms.sinks import SCORE_FORMAT, atomic_file, atomic_text_file, write_atomically

DETECTIONS_PARQUET = 'detections.parquet'
DETECTIONS_CSV = 'detections.csv'
RAVEN_DIR, RAVEN_SUFFIX = 'raven', '.selections.txt'
AUDACITY_DIR, AUDACITY_SUFFIX = 'audacity', '.labels.txt'
# The rule a detections.parquet was made with, in its schema metadata (for the report).
MIN_SCORE_KEY, TOP_K_KEY = b'soundscape.min_score', b'soundscape.top_k'

SCHEMA = pa.schema([
    ('source', pa.string()), ('row_id', pa.string()), ('start_s', pa.float64()),
    ('end_s', pa.float64()), ('recorded_at', pa.timestamp('ms')), ('recorder', pa.string()),
    ('species_code', pa.string()), ('scientific_name', pa.string()),
    ('common_name', pa.string()), ('score', pa.float32())])
RAVEN_COLUMNS = ('Selection', 'View', 'Channel', 'Begin Time (s)', 'End Time (s)',
                 'Low Freq (Hz)', 'High Freq (Hz)', 'Species Code', 'Common Name', 'Score')
_UNSAFE = re.compile(r'[^\w.-]+')  # \w: Unicode letters and digits, and '_'
_MAX_STEM = 120
ROWS_PER_BLOCK = 65_536  # detections tabled and written at once (whole windows at a time)


@dataclasses.dataclass(frozen=True)
class DetectionRule:
    """Which of a window's species are detections: those scoring at least ``min_score``,
    and also its ``top_k`` best whatever their score (0: none by rank).

    The union lets a survey ask for "everything likely, and at least the best guess for every
    window" (``--top_k 1``); ``min_score 1`` with ``top_k`` K keeps just the K best (scores
    stay below 1).
    """
    min_score: float = 0.5
    top_k: int = 0

    def __post_init__(self):
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f'min_score must be in [0, 1], not {self.min_score}')
        if self.top_k < 0:
            raise ValueError(f'top_k must be at least 0, not {self.top_k}')

    def select(self, scores: np.ndarray) -> np.ndarray:
        """Indices of the detected classes, best first (ties in class order)."""
        order = np.argsort(-scores, kind='stable')
        kept = scores[order] >= self.min_score
        kept[:self.top_k] = True
        return order[kept]


@dataclasses.dataclass(frozen=True)
class Species:
    """A target class and its names (empty for codes the eBird taxonomy lacks)."""
    code: str
    scientific_name: str = ''
    common_name: str = ''

    @property
    def label(self) -> str:
        return self.common_name or self.code


def species_names(classes: Sequence[str]) -> tuple[Species, ...]:
    """Each class with its names from the eBird taxonomy (code -> "Scientific_Common")."""
    taxonomy = ebird_taxonomy()
    return tuple(Species(code, *taxonomy[code].split('_', 1)) if '_' in taxonomy.get(code, '')
                 else Species(code) for code in classes)


@dataclasses.dataclass(frozen=True)
class WindowDetections:
    """One window's detections: what crosses from the scoring workers to the writer.

    One record per window with at least one detection, its species as indices into the
    target classes, so a run that detects much (a low ``--min_score``, a large ``--top_k``)
    moves and gathers a few small arrays per window, not one object per detection.
    """
    source: str
    row_id: str
    start_s: float
    end_s: float
    classes: np.ndarray    # int32 [N]: indices into the target classes, best first
    scores: np.ndarray     # float32 [N]


class SelectDetections(beam.DoFn):
    """A scored window's detections under the rule (nothing for a window without any)."""

    def __init__(self, rule: DetectionRule):
        self._rule = rule

    def process(self, window: ScoredWindow) -> Iterator[WindowDetections]:
        selected = self._rule.select(window.scores)
        if len(selected):
            yield WindowDetections(window.source, window.row_id, window.start_s, window.end_s,
                                   selected.astype(np.int32), window.scores[selected])


def detections_schema(rule: DetectionRule) -> pa.Schema:
    """``SCHEMA`` with the rule in its metadata, for the report to show."""
    return SCHEMA.with_metadata({MIN_SCORE_KEY: repr(rule.min_score).encode(),
                                 TOP_K_KEY: str(rule.top_k).encode()})


def detection_blocks(windows: Iterable[WindowDetections], species: Sequence[Species],
                     clock: RecorderClock, rule: DetectionRule,
                     rows_per_block: int = ROWS_PER_BLOCK) -> Iterator[pa.Table]:
    """All detections as consecutive Arrow tables, one row each, ordered by recording,
    window start, score (best first) and species code.

    Each table holds whole windows' detections, about ``rows_per_block`` rows, built column
    by column (a window's fields repeated over its detections, names taken by class index):
    memory stays bounded by a block, however many detections a run makes.
    """
    block: list[WindowDetections] = []
    rows = 0
    for window in sorted(windows, key=lambda w: (w.source, w.start_s)):
        block.append(window)
        rows += len(window.classes)
        if rows >= rows_per_block:
            yield _block(block, species, clock, rule)
            block, rows = [], 0
    if block:
        yield _block(block, species, clock, rule)


def _block(windows: Sequence[WindowDetections], species: Sequence[Species],
           clock: RecorderClock, rule: DetectionRule) -> pa.Table:
    times = [clock.read(w.source) for w in windows]
    per_window = pa.table({
        'source': [w.source for w in windows], 'row_id': [w.row_id for w in windows],
        'start_s': pa.array([w.start_s for w in windows], pa.float64()),
        'end_s': pa.array([w.end_s for w in windows], pa.float64()),
        'recorded_at': pa.array([t.at(w.start_s) for t, w in zip(times, windows)],
                                SCHEMA.field('recorded_at').type),
        'recorder': pa.array([t.recorder for t in times], pa.string())})
    counts = [len(w.classes) for w in windows]
    rows = per_window.take(pa.array(np.repeat(np.arange(len(windows)), counts)))
    classes = pa.array(np.concatenate([w.classes for w in windows]))
    names = {'species_code': [s.code for s in species],
             'scientific_name': [s.scientific_name for s in species],
             'common_name': [s.common_name for s in species]}
    for column, values in names.items():
        rows = rows.append_column(column, pa.array(values, pa.string()).take(classes))
    scores = np.concatenate([w.scores for w in windows])
    rows = rows.append_column('score', pa.array(scores, pa.float32()))
    return rows.sort_by([('source', 'ascending'), ('start_s', 'ascending'),
                         ('score', 'descending'), ('species_code', 'ascending')]
                        ).cast(detections_schema(rule))


def detections_csv(table: pa.Table) -> pd.DataFrame:
    """The same rows as ``detections.csv`` cells: ISO 8601 local times, numbers as in
    ``submission.csv``, empty cells where a value is unknown."""
    frame = table.to_pandas(timestamp_as_object=True)
    for column in ('start_s', 'end_s', 'score'):
        frame[column] = [SCORE_FORMAT % value for value in frame[column]]
    frame['recorded_at'] = [iso_time(t) if t is not None and t == t else ''
                            for t in frame['recorded_at']]
    return frame


def raven_table(detections: pa.Table, high_freq_hz: float) -> str:
    """A Raven Pro selection table: one selection per detection, over the full band."""
    rows = detections.select(['start_s', 'end_s', 'species_code', 'common_name', 'score'])
    lines = ['\t'.join(RAVEN_COLUMNS)]
    for number, (start, end, code, name, score) in enumerate(
            zip(*rows.to_pydict().values()), start=1):
        lines.append('\t'.join([
            str(number), 'Spectrogram 1', '1', f'{start:.3f}', f'{end:.3f}', '0.0',
            f'{high_freq_hz:.1f}', code, name, f'{score:.4f}']))
    return '\n'.join(lines) + '\n'


def audacity_labels(detections: pa.Table) -> str:
    """An Audacity label track: start, end, "Common Name (score)" (the code when unnamed)."""
    rows = detections.select(['start_s', 'end_s', 'species_code', 'common_name', 'score'])
    return ''.join(f'{start:.6f}\t{end:.6f}\t{name or code} ({score:.2f})\n'
                   for start, end, code, name, score in zip(*rows.to_pydict().values()))


def safe_stem(source: str) -> str:
    """A file name stem from a recording's name that cannot leave its folder.

    Letters of any script, digits, '-', '_' and '.' are kept, runs of anything else become
    one '_', and leading or trailing dots and '_' go (no '..', no hidden files); an empty
    result is "recording".
    """
    stem = _UNSAFE.sub('_', unicodedata.normalize('NFC', file_stem(source)))
    return stem.strip('._')[:_MAX_STEM].strip('._') or 'recording'


def table_stems(sources: Iterable[str]) -> dict[str, str]:
    """A distinct ``safe_stem`` per recording, also on case-insensitive file systems.

    Recordings whose names would collide (the same stem in two folders, or names that differ
    only in characters ``safe_stem`` replaces) after the first, in sorted order, get a short
    hash of their full path appended.
    """
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for source in sorted(set(sources)):
        stem = safe_stem(source)
        if stem.casefold() in taken:
            stem = f'{stem}-{hashlib.sha1(source.encode("utf-8")).hexdigest()[:8]}'
        taken.add(stem.casefold())
        stems[source] = stem
    return stems


@dataclasses.dataclass(frozen=True)
class DetectionOutputs:
    """Where the detections go, and in which forms."""
    output: str
    rule: DetectionRule = DetectionRule()
    raven: bool = False
    audacity: bool = False
    high_freq_hz: float = 24_000.0  # Raven selections span 0 Hz to this (the model's Nyquist)

    def path(self, *parts: str) -> str:
        return FileSystems.join(self.output, *parts)


class _WriteDetections(beam.DoFn):
    """Writes all the gathered detections: the two tables, then the per-recording files."""

    def __init__(self, outputs: DetectionOutputs, species: Sequence[Species],
                 clock: RecorderClock):
        self._outputs = outputs
        self._species = tuple(species)
        self._clock = clock

    def process(self, windows: list[WindowDetections], sources: list[str]) -> Iterator[dict]:
        out = self._outputs
        blocks = detection_blocks(windows, self._species, self._clock, out.rule)
        kept = self._write_tables(blocks, keep=out.raven or out.audacity)
        table = pa.concat_tables(kept) if kept else detections_schema(out.rule).empty_table()
        by_source = _split_by_source(table, sources)
        stems = table_stems(by_source)
        for folder, suffix, render, wanted in (
                (RAVEN_DIR, RAVEN_SUFFIX, self._raven, out.raven),
                (AUDACITY_DIR, AUDACITY_SUFFIX, audacity_labels, out.audacity)):
            written = (self._write_per_recording(folder, suffix, render, by_source, stems)
                       if wanted else set())
            _remove_stale(out.path(folder), suffix, written)
        yield {'detections': sum(len(w.classes) for w in windows),
               'recordings': len(by_source)}

    def _write_tables(self, blocks: Iterable[pa.Table], keep: bool) -> list[pa.Table]:
        """Streams the blocks into ``detections.parquet`` and ``detections.csv``; returns
        them when the per-recording tables need them afterwards (``keep``)."""
        kept = []
        schema = detections_schema(self._outputs.rule)
        with atomic_file(self._outputs.path(DETECTIONS_PARQUET)) as parquet_file, \
                atomic_text_file(self._outputs.path(DETECTIONS_CSV)) as text, \
                pq.ParquetWriter(parquet_file, schema) as parquet:
            detections_csv(schema.empty_table()).to_csv(text, index=False, lineterminator='\n')
            for block in blocks:
                parquet.write_table(block)
                detections_csv(block).to_csv(text, header=False, index=False,
                                             lineterminator='\n')
                if keep:
                    kept.append(block)
        return kept

    def _raven(self, detections: pa.Table) -> str:
        return raven_table(detections, self._outputs.high_freq_hz)

    def _write_per_recording(self, folder: str, suffix: str,
                             render: Callable[[pa.Table], str],
                             by_source: dict[str, pa.Table],
                             stems: dict[str, str]) -> set[str]:
        """Writes one file per recording into ``folder``; returns their paths."""
        directory = self._outputs.path(folder)
        if not FileSystems.exists(directory):
            FileSystems.mkdirs(directory)
        paths = set()
        for source, found in by_source.items():
            path = FileSystems.join(directory, stems[source] + suffix)
            write_atomically(path, render(found).encode('utf-8'))
            paths.add(path)
        return paths


def _split_by_source(table: pa.Table, sources: Iterable[str]) -> dict[str, pa.Table]:
    """Each recording's rows of a table ordered by source (an empty table when none)."""
    by_source = {source: table.schema.empty_table() for source in sources}
    names = table.column('source').to_numpy(zero_copy_only=False)
    if len(names):
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(names)]):
            by_source[names[start]] = table.slice(start, stop - start)
    return by_source


def _remove_stale(directory: str, suffix: str, keep: set[str]) -> None:
    """Deletes tables an earlier run left in ``directory``, so runs never mix."""
    if not FileSystems.exists(directory):
        return
    found = FileSystems.match([FileSystems.join(directory, f'*{suffix}')])[0].metadata_list
    stale = [m.path for m in found if m.path not in keep]
    if stale:
        FileSystems.delete(stale)


class WriteDetections(beam.PTransform):
    """Scored windows in; ``detections.parquet``, ``detections.csv`` and, when asked, the
    Raven and Audacity tables out (see the module docstring).

    Detections are gathered on one worker to be ordered and written, as ``submission.csv``
    is; they travel as one compact ``WindowDetections`` per window that has any.
    """

    def __init__(self, outputs: DetectionOutputs, species: Sequence[Species],
                 clock: RecorderClock = RecorderClock()):
        super().__init__()
        self._outputs = outputs
        self._select = SelectDetections(outputs.rule)
        self._write = _WriteDetections(outputs, species, clock)

    def expand(self, windows: beam.PCollection[ScoredWindow]):
        sources = (windows
                   | 'Sources' >> beam.Map(lambda w: w.source)
                   | 'DistinctSources' >> beam.Distinct()
                   | 'GatherSources' >> beam.combiners.ToList())
        return (windows
                | 'Select' >> beam.ParDo(self._select)
                | 'Gather' >> beam.combiners.ToList()
                | 'Write' >> beam.ParDo(self._write, beam.pvalue.AsSingleton(sources)))
