"""From file patterns to fixed-length windows at the model's sample rate.

    patterns -> MatchRecordings -> paths -> PlanShards -> Shard -> (Reshuffle) -> DecodeWindows -> Window

Planning reads only each file's header, so work units are small whatever the recording's
length; decoding seeks to a shard's frames, mixes to mono and resamples with soxr straight to
the model's rate. No step holds a whole recording in memory.

Windows start every ``hop_s`` seconds; the last one is zero-padded. A recording of D seconds
has ``max(1, ceil((D - window_s) / hop_s) + 1)`` windows (``ceil(D / 5)`` with the 5 s
defaults), and each is named ``<file stem>_<end second>`` as BirdCLEF does.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
import posixpath
from typing import Iterator

import apache_beam as beam
import numpy as np
import soundfile as sf
import soxr
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.heap import bound_native_heap
from transforms.progress import ReportProgress
from transforms.records import FileError, Shard, Window

AUDIO_EXTENSIONS = frozenset({'.ogg', '.flac', '.wav', '.mp3', '.opus'})
ERRORS = 'errors'  # the tag of every step's failure output
METRICS_NAMESPACE = 'soundscape'

# Frames decoded on each side of a shard and then discarded, so that neither the resampler's
# filter nor a lossy decoder's warm-up after a seek (MP3's bit reservoir) sees a hard edge.
_CONTEXT_S = 0.1


def count_failure(error: FileError) -> FileError:
    """Counts a failure under its kind (one Beam counter per kind), and passes it on."""
    Metrics.counter(METRICS_NAMESPACE, f'errors_{error.stage}_{error.error}').inc()
    return error


def failure(source: str, stage: str, exc: BaseException) -> beam.pvalue.TaggedOutput:
    """The tagged output that records ``exc`` as a failure of ``source`` at ``stage``."""
    # libsndfile's own words ("Format not recognised."), not the file object's repr.
    message = getattr(exc, 'error_string', None) or str(exc) or repr(exc)
    return beam.pvalue.TaggedOutput(
        ERRORS, count_failure(FileError(source, stage, type(exc).__name__, message)))


@dataclasses.dataclass(frozen=True)
class Windowing:
    """How recordings are cut: window length, hop and shard length, in seconds."""
    window_s: float = 5.0
    hop_s: float = 5.0
    shard_s: float = 60.0
    max_windows: int | None = None  # per recording, from its start (e.g. for training audio)

    def __post_init__(self):
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError(f'window_s and hop_s must be positive: {self}')
        if self.shard_s < self.hop_s:
            raise ValueError(f'shard_s must be at least hop_s: {self}')
        if self.max_windows is not None and self.max_windows < 1:
            raise ValueError(f'max_windows must be at least 1: {self}')

    @property
    def windows_per_shard(self) -> int:
        return max(1, int(self.shard_s // self.hop_s))

    def count(self, duration_s: float) -> int:
        """Windows in a recording of ``duration_s`` seconds (0 for an empty one), at most
        ``max_windows``."""
        if duration_s <= 0:
            return 0
        count = max(1, math.ceil((duration_s - self.window_s) / self.hop_s - 1e-9) + 1)
        return min(count, self.max_windows or count)

    def start_s(self, index: int) -> float:
        return index * self.hop_s

    def end_s(self, index: int) -> float:
        return index * self.hop_s + self.window_s


def row_id(source: str, end_s: float) -> str:
    """BirdCLEF's row id: the file stem, '_', and the window's end second (an integer when whole)."""
    stem = posixpath.splitext(posixpath.basename(source.replace('\\', '/')))[0]
    return f'{stem}_{end_s:g}'


def open_audio(path: str) -> sf.SoundFile:
    """Opens a local or remote (e.g. ``gs://``) recording through Beam's file systems."""
    return sf.SoundFile(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))


_TAIL_BYTES = 1 << 16


def _wav_shortfall(handle) -> str | None:
    """A WAV whose ``data`` chunk claims more bytes than the file holds (libsndfile trims)."""
    head = handle.read(_TAIL_BYTES)
    position = 12  # after "RIFF", the size and "WAVE"
    while position + 8 <= len(head):
        chunk, size = head[position:position + 4], int.from_bytes(head[position + 4:position + 8],
                                                                  'little')
        if chunk == b'data':
            handle.seek(0, 2)
            held = handle.tell() - position - 8
            if size != 0xFFFFFFFF and size > held:  # 0xFFFFFFFF: size left open by streamers
                return f'the WAV header declares {size} data bytes but the file holds {held}'
            return None
        position += 8 + size + (size & 1)
    return None


def _ogg_shortfall(handle) -> str | None:
    """An OGG stream whose last page is not flagged end-of-stream was cut short."""
    handle.seek(0, 2)
    handle.seek(max(0, handle.tell() - _TAIL_BYTES))
    tail = handle.read()
    page = tail.rfind(b'OggS')
    if page < 0 or page + 5 >= len(tail) or not tail[page + 5] & 0x04:
        return 'the OGG stream has no end-of-stream page'
    return None


def truncation(path: str, container: str) -> str | None:
    """Says how a file was cut short where the decoder would silently score less audio.

    A recorder that dies mid-write leaves a WAV header that promises more data than follows,
    or an OGG stream without its final page; libsndfile quietly reads what is there. FLAC and
    MP3 truncation shows up at decoding instead (see ``DecodeWindows``).
    """
    check = {'WAV': _wav_shortfall, 'WAVEX': _wav_shortfall, 'OGG': _ogg_shortfall}.get(container)
    if check is None:
        return None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return check(handle)


def _local_folders(pattern: str) -> list[str]:
    """Local folders a glob matches, which Beam's matcher skips without a word."""
    if '://' in pattern or not glob.has_magic(pattern):
        return []
    return sorted(path for path in glob.glob(pattern) if os.path.isdir(path))


class MatchRecordings(beam.DoFn):
    """Expands one file pattern into the recordings it matches.

    A pattern that matches nothing, and a matched file whose extension is not a supported
    audio format, is recorded on the ``errors`` output rather than silently ignored.
    """

    def process(self, pattern: str) -> Iterator[str | beam.pvalue.TaggedOutput]:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
            if not matched:
                raise FileNotFoundError(f'no file matches {pattern!r}')
        except Exception as exc:  # pylint: disable=broad-except
            yield failure(pattern, 'match', exc)
            return
        for folder in _local_folders(pattern):
            yield failure(folder, 'match', IsADirectoryError(
                'a folder, not a recording: its name matched the pattern'))
        for metadata in matched:
            extension = posixpath.splitext(metadata.path)[1].lower()
            if extension in AUDIO_EXTENSIONS:
                yield metadata.path
            else:
                yield failure(metadata.path, 'match', ValueError(
                    f'unsupported extension {extension!r}; expected one of '
                    f'{", ".join(sorted(AUDIO_EXTENSIONS))}'))


class PlanShards(beam.DoFn):
    """Reads a recording's header and emits its shards; no audio is decoded here."""

    def __init__(self, windowing: Windowing):
        self._windowing = windowing
        self._files = Metrics.counter(METRICS_NAMESPACE, 'files')
        self._audio_ms = Metrics.counter(METRICS_NAMESPACE, 'audio_ms')

    def process(self, path: str) -> Iterator[Shard | beam.pvalue.TaggedOutput]:
        try:
            with open_audio(path) as audio:
                sample_rate, channels, frames = audio.samplerate, audio.channels, audio.frames
                container = audio.format
            num_windows = self._windowing.count(frames / sample_rate)
            if num_windows == 0:
                raise ValueError('the recording holds no audio frames')
            shortfall = truncation(path, container)
        except Exception as exc:  # pylint: disable=broad-except
            yield failure(path, 'plan', exc)
            return
        if shortfall:
            yield failure(path, 'plan', EOFError(
                f'{shortfall}: the file was cut short; its readable '
                f'{frames / sample_rate:.2f} s are scored'))
        self._files.inc()
        covered_s = min(frames / sample_rate, self._windowing.end_s(num_windows - 1))
        self._audio_ms.inc(round(1000 * covered_s))
        step = self._windowing.windows_per_shard
        for first in range(0, num_windows, step):
            yield Shard(path, sample_rate, channels, frames, first, min(step, num_windows - first))


def read_mono(audio: sf.SoundFile, start: int, stop: int
              ) -> tuple[np.ndarray, Exception | None]:
    """Frames [start, stop) mixed down to mono float32, read in one-second blocks.

    Reading stops early, keeping what came before, where the data ends or the decoder fails
    (a truncated or corrupt file: even the seek may fail); the failure, if any, is returned
    rather than raised.
    """
    blocks: list[np.ndarray] = []
    try:
        audio.seek(start)
        while (remaining := stop - start - sum(map(len, blocks))) > 0:
            frames = audio.read(min(audio.samplerate, remaining), dtype='float32',
                                always_2d=True)
            if not len(frames):
                break
            blocks.append(frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1
                          else frames[:, 0])
    except Exception as exc:  # pylint: disable=broad-except
        return _concatenate(blocks), exc
    return _concatenate(blocks), None


def _concatenate(blocks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


def _early_end(end_s: float, declared_s: float, lost_starts: list[float],
               cause: Exception | None) -> str:
    """Says where a recording's data stopped, why if known, and which windows it lost."""
    message = f'data ends at {end_s:.2f} s'
    if cause is not None:
        message += f' ({type(cause).__name__}: {getattr(cause, "error_string", None) or cause})'
    message += f'; the header declares {declared_s:.2f} s'
    if lost_starts:
        message += f': {len(lost_starts)} window(s) from {lost_starts[0]:g} s lost'
    return message


class DecodeWindows(beam.DoFn):
    """Decodes one shard and cuts it into windows at ``sample_rate``.

    The shard's frames plus a little context on each side are read with one seek, mixed to
    mono, resampled once with soxr (high quality), and sliced. Non-finite samples are zeroed
    before they can reach a model, and recorded. If the data ends before the header says
    (a recorder that died mid-write), the windows that hold any data are kept and the lost
    ones are recorded.
    """

    def __init__(self, windowing: Windowing, sample_rate: int):
        self._windowing = windowing
        self._sample_rate = sample_rate
        self._window_samples = round(windowing.window_s * sample_rate)
        self._windows = Metrics.counter(METRICS_NAMESPACE, 'windows')

    def setup(self) -> None:
        bound_native_heap()  # the worker holds every window: see transforms/heap.py

    def process(self, shard: Shard) -> Iterator[Window | beam.pvalue.TaggedOutput]:
        try:
            windows, problems = self._decode(shard)
        except Exception as exc:  # pylint: disable=broad-except
            yield failure(shard.source, 'decode', exc)
            return
        for problem in problems:
            yield failure(shard.source, 'decode', problem)
        self._windows.inc(len(windows))
        yield from windows

    def _decode(self, shard: Shard) -> tuple[list[Window], list[Exception]]:
        w, rate, native = self._windowing, self._sample_rate, shard.sample_rate
        indices = range(shard.first_window, shard.first_window + shard.num_windows)
        starts = [round(w.start_s(i) * native) for i in indices]
        context = round(_CONTEXT_S * native)
        read_from = max(0, starts[0] - context)
        read_to = min(shard.total_frames, starts[-1] + round(w.window_s * native) + context)
        with open_audio(shard.source) as audio:
            mono, stopped_by = read_mono(audio, read_from, read_to)
        data_end = read_from + len(mono)  # < read_to when the file is shorter than declared

        problems: list[Exception] = []
        lost = [w.start_s(i) for i, start in zip(indices, starts) if start >= data_end]
        if stopped_by is not None or lost:
            problems.append(EOFError(_early_end(
                data_end / native, shard.total_frames / native, lost, stopped_by)))
        finite = np.isfinite(mono)
        if not finite.all():
            problems.append(ValueError(
                f'{np.count_nonzero(~finite)} NaN/Inf samples between '
                f'{read_from / native:.2f} s and {data_end / native:.2f} s were set to 0'))
            mono = np.where(finite, mono, np.float32(0))
        if native != rate and len(mono):
            mono = soxr.resample(mono, native, rate, quality='HQ')

        windows = []
        for index, start in zip(indices, starts):
            if start >= data_end:
                break
            offset = round((start - read_from) * rate / native)
            samples = mono[offset:offset + self._window_samples]
            if len(samples) < self._window_samples:
                samples = np.pad(samples, (0, self._window_samples - len(samples)))
            windows.append(Window(
                row_id=row_id(shard.source, w.end_s(index)), source=shard.source,
                start_s=w.start_s(index), end_s=w.end_s(index),
                samples=np.ascontiguousarray(samples, dtype=np.float32)))
        return windows, problems


class ReadWindows(beam.PTransform):
    """File patterns in, windows out (main output) and ``FileError``s (``errors`` output)."""

    def __init__(self, windowing: Windowing, sample_rate: int, workers: int = 1):
        super().__init__()
        self._windowing = windowing
        self._sample_rate = sample_rate
        self._workers = workers

    def expand(self, patterns: beam.PCollection[str]
               ) -> tuple[beam.PCollection[Window], beam.PCollection[FileError]]:
        matched = patterns | 'Match' >> beam.ParDo(MatchRecordings()).with_outputs(
            ERRORS, main='paths')
        planned = (
            matched.paths
            | 'Deduplicate' >> beam.Distinct()
            | 'PlanShards' >> beam.ParDo(PlanShards(self._windowing)).with_outputs(
                ERRORS, main='shards'))
        hop_s = self._windowing.hop_s
        planned_s = (planned.shards
                     | 'ShardSeconds' >> beam.Map(lambda shard: shard.num_windows * hop_s)
                     | 'PlannedSeconds' >> beam.CombineGlobally(sum))
        decoded = (
            planned.shards
            | 'SpreadShards' >> beam.Reshuffle()
            | 'ReportProgress' >> beam.ParDo(ReportProgress(hop_s, self._workers),
                                             beam.pvalue.AsSingleton(planned_s))
            | 'DecodeWindows' >> beam.ParDo(
                DecodeWindows(self._windowing, self._sample_rate)).with_outputs(
                    ERRORS, main='windows'))
        errors = ((matched[ERRORS], planned[ERRORS], decoded[ERRORS])
                  | 'FlattenErrors' >> beam.Flatten())
        return decoded.windows, errors
