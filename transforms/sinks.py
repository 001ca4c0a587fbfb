"""Writers for the outputs in ``--output``: window Parquet, embeddings, submission CSV, errors.

Every file appears atomically: Beam's Parquet sink writes to a temporary folder and renames
on success, and the single-file writers write a temporary name next to the final one and
rename it, so a failed run never leaves a half-written ``submission.csv``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import uuid
from typing import BinaryIO, Iterable, Iterator, Sequence, TextIO

import apache_beam as beam
import numpy as np
import pandas as pd
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.recorder_time import RecorderClock
from transforms.records import FileError, ScoredWindow

SUBMISSION = 'submission.csv'
ERRORS_CSV = 'errors.csv'
WINDOWS_PREFIX = 'windows'
EMBEDDINGS_PREFIX = 'embeddings'
SCORE_FORMAT = '%.7g'  # float32 keeps ~7 significant digits
_METADATA_COLUMNS = ('row_id', 'source', 'start_s', 'end_s', 'model', 'recorder', 'recorded_at')
_PARQUET_BATCH = 1024


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """A binary handle whose contents appear at ``path``, through a temporary sibling and a
    rename, only once it is closed without error (a failed write leaves nothing behind)."""
    temporary = f'{path}.tmp-{uuid.uuid4().hex}'
    try:
        with FileSystems.create(temporary) as handle:
            yield handle
    except BaseException:
        if FileSystems.exists(temporary):
            FileSystems.delete([temporary])
        raise
    FileSystems.rename([temporary], [path])


def write_atomically(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (see ``atomic_file``)."""
    with atomic_file(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_text_file(path: str) -> Iterator[TextIO]:
    """``atomic_file`` as UTF-8 text, for writers that stream rows (``DataFrame.to_csv``
    formats and writes a block of rows at a time; rendering a whole table as one string
    first would hold several times the file's size: a day of windows, ~200 MB)."""
    with atomic_file(path) as handle:
        text = io.TextIOWrapper(handle, encoding='utf-8', newline='')
        yield text
        text.flush()
        text.detach()  # the handle is closed by atomic_file


def write_csv_atomically(path: str, frame: pd.DataFrame, **to_csv_options) -> None:
    """``frame`` as UTF-8 CSV at ``path``, atomically, without its index."""
    with atomic_text_file(path) as text:
        frame.to_csv(text, index=False, lineterminator='\n', **to_csv_options)


def window_schema(classes: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [('row_id', pa.string()), ('source', pa.string()), ('start_s', pa.float64()),
         ('end_s', pa.float64()), ('model', pa.string()), ('recorder', pa.string()),
         ('recorded_at', pa.timestamp('ms'))]  # local time from the file name, or null
        + [(c, pa.float32()) for c in classes])


def embedding_schema(dimension: int, with_labels: bool = False) -> pa.Schema:
    fields = [('row_id', pa.string()), ('source', pa.string()), ('model', pa.string())]
    if with_labels:
        fields.append(('labels', pa.list_(pa.string())))
    return pa.schema(fields + [('embedding', pa.list_(pa.float32(), dimension))])


@dataclasses.dataclass(frozen=True)
class WindowsTable:
    """Scored windows as one Arrow table: metadata, then one column per class."""
    schema: pa.Schema
    model: str
    clock: RecorderClock = RecorderClock()

    def __call__(self, batch: list[ScoredWindow]) -> pa.Table:
        scores = np.stack([w.scores for w in batch])
        classes = self.schema.names[len(_METADATA_COLUMNS):]
        times = [self.clock.read(w.source) for w in batch]
        columns = {'row_id': [w.row_id for w in batch], 'source': [w.source for w in batch],
                   'start_s': [w.start_s for w in batch], 'end_s': [w.end_s for w in batch],
                   'model': [self.model] * len(batch),
                   'recorder': [t.recorder for t in times],
                   'recorded_at': [t.at(w.start_s) for t, w in zip(times, batch)]}
        columns.update({name: scores[:, i] for i, name in enumerate(classes)})
        return pa.Table.from_pydict(columns, schema=self.schema)


@dataclasses.dataclass(frozen=True)
class EmbeddingsTable:
    """Window embeddings as one Arrow table, with each recording's labels when training."""
    schema: pa.Schema
    model: str
    labels_by_source: dict[str, tuple[str, ...]] | None = None

    def __call__(self, batch: list[ScoredWindow]) -> pa.Table:
        flat = pa.array(np.concatenate([w.embedding for w in batch]), pa.float32())
        columns = {'row_id': [w.row_id for w in batch], 'source': [w.source for w in batch],
                   'model': [self.model] * len(batch),
                   'embedding': pa.FixedSizeListArray.from_arrays(
                       flat, self.schema.field('embedding').type.list_size)}
        if self.labels_by_source is not None:
            columns['labels'] = [list(self.labels_by_source[w.source]) for w in batch]
        return pa.Table.from_pydict(columns, schema=self.schema)


class WriteParquet(beam.PTransform):
    """Scored windows to ``<output>/<prefix>-SSSSS-of-NNNNN.parquet``, in columnar batches."""

    def __init__(self, output_dir: str, prefix: str,
                 to_table: WindowsTable | EmbeddingsTable):
        super().__init__()
        self._path = FileSystems.join(output_dir, prefix)
        self._to_table = to_table

    def expand(self, windows: beam.PCollection[ScoredWindow]):
        return (
            windows
            | 'Batch' >> beam.BatchElements(min_batch_size=1, max_batch_size=_PARQUET_BATCH)
            | 'ToTable' >> beam.Map(self._to_table)
            | 'Write' >> beam.io.WriteToParquetBatched(
                self._path, self._to_table.schema, file_name_suffix='.parquet'))


def read_sample_submission(path: str) -> pd.DataFrame:
    """A ``sample_submission.csv``: ``row_id`` (kept as text) then the class columns."""
    with FileSystems.open(path) as handle:
        frame = pd.read_csv(handle, dtype={'row_id': str})
    if frame.columns[0] != 'row_id' or len(frame.columns) < 2:
        raise ValueError(f'{path}: a sample submission starts with row_id, then class columns')
    if frame['row_id'].duplicated().any():
        raise ValueError(f'{path}: duplicate row_id values')
    return frame


@dataclasses.dataclass
class SubmissionRows:
    """Submission rows gathered column by column: what crosses between workers is a few
    lists and score matrices, not an object per window."""
    sources: list[str] = dataclasses.field(default_factory=list)
    end_s: list[float] = dataclasses.field(default_factory=list)
    row_ids: list[str] = dataclasses.field(default_factory=list)
    scores: list[np.ndarray] = dataclasses.field(default_factory=list)  # [C] rows or [N, C]

    def matrix(self, num_classes: int) -> np.ndarray:
        """All the scores as one float32 [N, C] matrix, in the order of the other lists."""
        if not self.scores:
            return np.zeros((0, num_classes), np.float32)
        return np.concatenate([np.atleast_2d(s) for s in self.scores]).astype(np.float32)

    def compact(self) -> 'SubmissionRows':
        if len(self.scores) > 1:
            self.scores = [self.matrix(0)]
        return self


class GatherSubmissionRows(beam.CombineFn):
    """Scored windows -> one ``SubmissionRows``; each worker's part is stacked into a single
    matrix (``compact``) before it is sent on."""

    def create_accumulator(self) -> SubmissionRows:
        return SubmissionRows()

    def add_input(self, rows: SubmissionRows, window: ScoredWindow) -> SubmissionRows:
        rows.sources.append(window.source)
        rows.end_s.append(window.end_s)
        rows.row_ids.append(window.row_id)
        rows.scores.append(window.scores)
        return rows

    def merge_accumulators(self, parts: Iterable[SubmissionRows]) -> SubmissionRows:
        merged = SubmissionRows()
        for part in parts:
            merged.sources += part.sources
            merged.end_s += part.end_s
            merged.row_ids += part.row_ids
            merged.scores += part.scores
        return merged

    def compact(self, rows: SubmissionRows) -> SubmissionRows:
        return rows.compact()

    def extract_output(self, rows: SubmissionRows) -> SubmissionRows:
        return rows


def submission_frame(rows: SubmissionRows, classes: Sequence[str],
                     expected_row_ids: Sequence[str] | None,
                     missing_score: float) -> tuple[pd.DataFrame, int, int]:
    """The submission table: ``row_id`` then one column per class.

    Rows are ordered by recording, then window end; with ``expected_row_ids`` (from a
    sample submission) they are exactly those rows in that order, any row no window produced
    filled with ``missing_score``. Also returns how many rows were filled and dropped.
    """
    order = sorted(range(len(rows.row_ids)), key=lambda i: (rows.sources[i], rows.end_s[i]))
    frame = pd.DataFrame(rows.matrix(len(classes))[order], columns=list(classes))
    frame.insert(0, 'row_id', [rows.row_ids[i] for i in order])
    if expected_row_ids is None:
        return frame, 0, 0
    produced = frame.set_index('row_id')
    expected = pd.Index(expected_row_ids, name='row_id')
    filled = int((~expected.isin(produced.index)).sum())
    dropped = int((~produced.index.isin(expected)).sum())
    frame = produced.reindex(expected, fill_value=np.float32(missing_score)).reset_index()
    return frame, filled, dropped


class _WriteSubmission(beam.DoFn):

    def __init__(self, path: str, classes: Sequence[str],
                 expected_row_ids: Sequence[str] | None, missing_score: float):
        self._path = path
        self._classes = list(classes)
        self._expected = list(expected_row_ids) if expected_row_ids is not None else None
        self._missing_score = missing_score

    def process(self, rows: SubmissionRows) -> Iterable[dict]:
        frame, filled, dropped = submission_frame(
            rows, self._classes, self._expected, self._missing_score)
        write_csv_atomically(self._path, frame, float_format=SCORE_FORMAT)
        yield {'rows': len(frame), 'filled_rows': filled, 'dropped_rows': dropped}


class WriteSubmissionCsv(beam.PTransform):
    """All scored windows into one ``submission.csv`` in BirdCLEF's layout.

    The rows are gathered on one worker to be ordered, as one score matrix per worker: ~1 KB
    per window with 264 classes (a day of audio: 18 MB; a competition's test set of a few
    hundred hours: ~10^5 rows); the Parquet output is the one that scales without limit.
    """

    def __init__(self, path: str, classes: Sequence[str],
                 expected_row_ids: Sequence[str] | None = None, missing_score: float = 0.0):
        super().__init__()
        self._write = _WriteSubmission(path, classes, expected_row_ids, missing_score)

    def expand(self, windows: beam.PCollection[ScoredWindow]):
        return (
            windows
            | 'Gather' >> beam.CombineGlobally(GatherSubmissionRows())
            | 'Write' >> beam.ParDo(self._write))


def errors_frame(errors: Iterable[FileError]) -> pd.DataFrame:
    frame = pd.DataFrame([(e.source, e.stage, e.error, e.message) for e in errors],
                         columns=['source', 'stage', 'error', 'message'])
    return frame.sort_values(list(frame.columns), ignore_index=True)


class WriteErrorsCsv(beam.PTransform):
    """All failures into ``errors.csv`` (a header alone when nothing failed)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, errors: beam.PCollection[FileError]):
        path = self._path

        def write(gathered: list[FileError]) -> int:
            write_csv_atomically(path, errors_frame(gathered))
            return len(gathered)

        return errors | 'Gather' >> beam.combiners.ToList() | 'Write' >> beam.Map(write)
