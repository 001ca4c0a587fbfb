"""The one interface every model sits behind, and the record that describes a model.

Everything downstream of inference (label mapping, activation, outputs) sees only this:
windows of mono float32 audio at ``sample_rate`` in, one logit per label and one embedding
out, with fixed shapes. Model families differ only in their adapter.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Protocol

import numpy as np


class AudioModel(Protocol):
    """A loaded model: a batch of windows in, logits and embeddings out."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[B, T] float32 windows -> ([B, K] logits, [B, D] embeddings; D may be 0)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec(abc.ABC):
    """What the pipeline must know about a model before loading its weights.

    Built in the launcher, where labels are needed to plan the class mapping, and pickled
    to the workers, where ``load`` builds the model itself.
    """
    name: str                  # identity written to every output row, e.g. "birdnet-v2.4"
    sample_rate: int           # the rate windows are resampled to
    labels: tuple[str, ...]    # eBird codes in output order (the model's own name where none)
    window_s: float | None     # the one window length the model takes, or None for any
    embedding_dim: int         # D of ``infer``'s embeddings (0 when not computed)
    threads: int | None = None  # compute threads per loaded model; None: the model's default
    # Windows per model call when the user gives no --batch_size: the smallest batch that
    # runs as fast as any on a CPU core, since a batch's activations stay resident per worker.
    batch_size: int = 8

    @abc.abstractmethod
    def load(self) -> AudioModel:
        """Loads the weights; called once per worker process by RunInference."""
