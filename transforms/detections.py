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

import csv
import dataclasses
import datetime
import hashlib
import io
import re
import unicodedata
from typing import Callable, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.classes import ebird_taxonomy
from transforms.recorder_time import RecorderClock, file_stem, iso_time
from transforms.records import ScoredWindow
from transforms.sinks import SCORE_FORMAT, write_atomically

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
class Detection:
    """One species in one window: one row of ``detections.csv``."""
    source: str
    row_id: str
    start_s: float
    end_s: float
    recorded_at: datetime.datetime | None
    recorder: str | None
    species: Species
    score: float

    @property
    def sort_key(self) -> tuple:
        return self.source, self.start_s, -self.score, self.species.code


class SelectDetections(beam.DoFn):
    """A scored window's detections under the rule, with the recording's local time."""

    def __init__(self, species: Sequence[Species], rule: DetectionRule, clock: RecorderClock):
        self._species = tuple(species)
        self._rule = rule
        self._clock = clock

    def process(self, window: ScoredWindow) -> Iterator[Detection]:
        time = self._clock.read(window.source)
        for index in self._rule.select(window.scores):
            yield Detection(window.source, window.row_id, window.start_s, window.end_s,
                            time.at(window.start_s), time.recorder, self._species[index],
                            float(window.scores[index]))


def detections_table(detections: Sequence[Detection], rule: DetectionRule) -> pa.Table:
    """The detections as Arrow, in the order given, with the rule in the schema metadata."""
    columns = {
        'source': [d.source for d in detections], 'row_id': [d.row_id for d in detections],
        'start_s': [d.start_s for d in detections], 'end_s': [d.end_s for d in detections],
        'recorded_at': [d.recorded_at for d in detections],
        'recorder': [d.recorder for d in detections],
        'species_code': [d.species.code for d in detections],
        'scientific_name': [d.species.scientific_name for d in detections],
        'common_name': [d.species.common_name for d in detections],
        'score': [d.score for d in detections]}
    metadata = {MIN_SCORE_KEY: repr(rule.min_score).encode(), TOP_K_KEY: str(rule.top_k).encode()}
    return pa.Table.from_pydict(columns, schema=SCHEMA.with_metadata(metadata))


def detections_csv(detections: Iterable[Detection]) -> str:
    """The same rows as CSV: ISO 8601 local times, empty cells where a value is unknown."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(SCHEMA.names)
    for d in detections:
        writer.writerow([d.source, d.row_id, f'{d.start_s:g}', f'{d.end_s:g}',
                         iso_time(d.recorded_at) if d.recorded_at else '', d.recorder or '',
                         d.species.code, d.species.scientific_name, d.species.common_name,
                         SCORE_FORMAT % d.score])
    return buffer.getvalue()


def raven_table(detections: Iterable[Detection], high_freq_hz: float) -> str:
    """A Raven Pro selection table: one selection per detection, over the full band."""
    lines = ['\t'.join(RAVEN_COLUMNS)]
    for number, d in enumerate(detections, start=1):
        lines.append('\t'.join([
            str(number), 'Spectrogram 1', '1', f'{d.start_s:.3f}', f'{d.end_s:.3f}', '0.0',
            f'{high_freq_hz:.1f}', d.species.code, d.species.common_name, f'{d.score:.4f}']))
    return '\n'.join(lines) + '\n'


def audacity_labels(detections: Iterable[Detection]) -> str:
    """An Audacity label track: start, end, "Common Name (score)"."""
    return ''.join(f'{d.start_s:.6f}\t{d.end_s:.6f}\t{d.species.label} ({d.score:.2f})\n'
                   for d in detections)


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

    def __init__(self, outputs: DetectionOutputs):
        self._outputs = outputs

    def process(self, detections: list[Detection], sources: list[str]) -> Iterator[dict]:
        detections = sorted(detections, key=lambda d: d.sort_key)
        self._write_tables(detections)
        by_source: dict[str, list[Detection]] = {source: [] for source in sources}
        for detection in detections:
            by_source.setdefault(detection.source, []).append(detection)
        stems = table_stems(by_source)
        out = self._outputs
        for folder, suffix, render, wanted in (
                (RAVEN_DIR, RAVEN_SUFFIX, self._raven, out.raven),
                (AUDACITY_DIR, AUDACITY_SUFFIX, audacity_labels, out.audacity)):
            written = (self._write_per_recording(folder, suffix, render, by_source, stems)
                       if wanted else set())
            _remove_stale(out.path(folder), suffix, written)
        yield {'detections': len(detections), 'recordings': len(by_source)}

    def _write_tables(self, detections: list[Detection]) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(detections_table(detections, self._outputs.rule), sink)
        write_atomically(self._outputs.path(DETECTIONS_PARQUET), sink.getvalue().to_pybytes())
        write_atomically(self._outputs.path(DETECTIONS_CSV),
                         detections_csv(detections).encode('utf-8'))

    def _raven(self, detections: list[Detection]) -> str:
        return raven_table(detections, self._outputs.high_freq_hz)

    def _write_per_recording(self, folder: str, suffix: str,
                             render: Callable[[list[Detection]], str],
                             by_source: dict[str, list[Detection]],
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

    Detections are sparse (a few per window at most), so they are gathered on one worker to
    be ordered and written, as ``submission.csv`` is.
    """

    def __init__(self, outputs: DetectionOutputs, species: Sequence[Species],
                 clock: RecorderClock = RecorderClock()):
        super().__init__()
        self._outputs = outputs
        self._select = SelectDetections(species, outputs.rule, clock)

    def expand(self, windows: beam.PCollection[ScoredWindow]):
        sources = (windows
                   | 'Sources' >> beam.Map(lambda w: w.source)
                   | 'DistinctSources' >> beam.Distinct()
                   | 'GatherSources' >> beam.combiners.ToList())
        return (windows
                | 'Select' >> beam.ParDo(self._select)
                | 'Gather' >> beam.combiners.ToList()
                | 'Write' >> beam.ParDo(_WriteDetections(self._outputs),
                                        beam.pvalue.AsSingleton(sources)))
