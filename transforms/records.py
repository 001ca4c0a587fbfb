"""The records that travel between the pipeline's steps, defined once.

One window can be followed from file to CSV row through these types, in this order:

    Shard -> Window -> InferredWindow -> ScoredWindow

plus ``FileError``, which any step may emit on its ``errors`` output instead of failing the
bundle. They are frozen dataclasses of plain values and numpy arrays, so Beam's pickling
coders carry them between workers unchanged.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shard:
    """A run of consecutive windows of one recording: the unit of decoding work.

    Shards are planned from the file header alone, so a 24-hour recording becomes many small
    work items that ``Reshuffle`` can spread over workers, each decoding only its own frames.
    """
    source: str            # path or URL of the recording, as matched
    sample_rate: int       # the file's native rate
    channels: int
    total_frames: int      # frames the header declares
    first_window: int      # index of the shard's first window in the recording
    num_windows: int


@dataclasses.dataclass(frozen=True)
class Window:
    """One analysis window at the model's sample rate (the last one zero-padded)."""
    row_id: str            # "<file stem>_<end second>", the BirdCLEF convention
    source: str
    start_s: float
    end_s: float
    samples: np.ndarray    # float32 [window_samples], mono


@dataclasses.dataclass(frozen=True)
class InferredWindow:
    """A window's raw model outputs over the model's own label set."""
    row_id: str
    source: str
    start_s: float
    end_s: float
    logits: np.ndarray     # float32 [K]: one per model label
    embedding: np.ndarray  # float32 [D] (D = 0 when the model gives none)


@dataclasses.dataclass(frozen=True)
class ScoredWindow:
    """A window's scores over the target classes: one output row."""
    row_id: str
    source: str
    start_s: float
    end_s: float
    scores: np.ndarray     # float32 [C], in [0, 1], in the target class order
    embedding: np.ndarray


@dataclasses.dataclass(frozen=True)
class FileError:
    """A failure recorded as data: one row of ``errors.csv``."""
    source: str
    stage: str             # "plan" (reading the header) or "decode"
    error: str             # the failure kind, e.g. the exception class name
    message: str
