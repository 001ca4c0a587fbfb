"""Google's Perch (``bird-vocalization-classifier``) behind the ``AudioModel`` interface.

HANDLE is anything ``tensorflow_hub.load`` accepts: a Kaggle or TF Hub URL, or a local
SavedModel directory. Perch takes 5 s of 32 kHz audio, peak-normalised to 0.25 as Perch's own
inference code does (``x * 0.25 / max|x|``; a silent window stays silent). Three calling
conventions are hidden here:

- versions 1-4: ``infer_tf(audio) -> (logits, embeddings)``;
- version 8: ``infer_tf(audio) -> {'label': ..., 'embedding': ..., ...}``;
- Perch 2.0: ``signatures['serving_default'](inputs=audio) -> {'label': ..., 'embedding': ...}``.

The class list is ``assets/label.csv`` (or ``assets/labels.csv``): a header line, then one
eBird code per line, in output order.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import os

import numpy as np

from transforms.models.base import ModelSpec

SAMPLE_RATE = 32_000
WINDOW_S = 5.0
TARGET_PEAK = 0.25
LABEL_FILES = ('label.csv', 'labels.csv')
# Windows per call on a CPU: as fast as 32 on one core and 640 MB smaller per worker
# (EfficientNet-B1 stand-in, 1 thread: 42.8 windows/s and 1347 MB at 4, 40.5 and 1987 MB at 32).
CPU_BATCH = 4
_LOG = logging.getLogger(__name__)


def peak_normalise(batch: np.ndarray, target_peak: float = TARGET_PEAK) -> np.ndarray:
    """Scales each window so its largest absolute sample is ``target_peak``."""
    peak = np.abs(batch).max(axis=1, keepdims=True)
    scale = np.divide(target_peak, peak, out=np.zeros_like(peak), where=peak > 0)
    return (batch * scale).astype(np.float32)


def resolve(handle: str) -> str:
    """The local SavedModel directory for ``handle`` (downloading a hub model if needed)."""
    if os.path.isdir(handle):
        return handle
    import tensorflow_hub as hub  # pylint: disable=import-outside-toplevel
    return hub.resolve(handle)


def check_saved_model(model_dir: str) -> None:
    """Fails fast, naming the folder, when it holds no SavedModel (before any job starts)."""
    if not any(os.path.exists(os.path.join(model_dir, name))
               for name in ('saved_model.pb', 'saved_model.pbtxt')):
        raise FileNotFoundError(f'{model_dir}: no saved_model.pb: not a TensorFlow SavedModel')


def read_labels(model_dir: str) -> list[str]:
    """The model's class list from its ``assets/`` folder."""
    for name in LABEL_FILES:
        path = os.path.join(model_dir, 'assets', name)
        if os.path.exists(path):
            with open(path, encoding='utf-8', newline='') as handle:
                rows = [row[0].strip() for row in csv.reader(handle) if row and row[0].strip()]
            return rows[1:]  # the first line is a header, e.g. "ebird2021"
    raise FileNotFoundError(
        f'{model_dir}: no assets/{" or assets/".join(LABEL_FILES)}: is it a Perch SavedModel?')


class PerchModel:
    """A loaded Perch SavedModel; TF functions are safe to call from several threads."""

    def __init__(self, handle: str, threads: int | None = None):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import tensorflow_hub as hub  # pylint: disable=import-outside-toplevel
        if threads:
            try:  # only possible before TensorFlow's runtime starts in this process
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                _LOG.warning('TensorFlow already started: keeping its thread counts')
        self._tf = tf
        self._model = hub.load(handle)
        if hasattr(self._model, 'infer_tf'):
            self._call = self._model.infer_tf
        elif 'serving_default' in getattr(self._model, 'signatures', {}):
            signature = self._model.signatures['serving_default']
            (input_name,) = signature.structured_input_signature[1].keys()
            self._call = lambda audio: signature(**{input_name: audio})
        else:
            raise ValueError(f'{handle}: neither infer_tf nor a serving_default signature')

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._call(self._tf.constant(peak_normalise(batch)))
        if isinstance(outputs, dict):
            logits = outputs['label']
            embeddings = outputs.get('embedding')
        else:
            logits, embeddings = outputs[0], outputs[1]
        embeddings = (np.zeros((len(batch), 0), np.float32) if embeddings is None
                      else np.asarray(embeddings, dtype=np.float32))
        return np.asarray(logits, dtype=np.float32), embeddings


@dataclasses.dataclass(frozen=True)
class PerchSpec(ModelSpec):
    handle: str = ''

    def load(self) -> PerchModel:
        return PerchModel(self.handle, self.threads)


def spec(handle: str, probe_embedding: bool = False, threads: int | None = None) -> PerchSpec:
    """Reads the class list of the Perch model at ``handle``.

    The weights stay unloaded unless ``probe_embedding``: then the model is loaded once here
    and run on one silent window to learn its embedding size, which the embeddings' Parquet
    schema needs before the job starts.
    """
    model_dir = resolve(handle)
    check_saved_model(model_dir)
    labels = tuple(read_labels(model_dir))
    embedding_dim = 0
    if probe_embedding:
        silence = np.zeros((1, round(WINDOW_S * SAMPLE_RATE)), dtype=np.float32)
        embedding_dim = PerchModel(handle).infer(silence)[1].shape[1]
    return PerchSpec(name=f'perch:{handle}', sample_rate=SAMPLE_RATE, labels=labels,
                     window_s=WINDOW_S, embedding_dim=embedding_dim, threads=threads,
                     batch_size=CPU_BATCH, handle=handle)
