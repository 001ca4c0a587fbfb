"""A linear head on a model's embeddings: scores for classes the model lacks, or better ones.

Bird-classifier embeddings make strong few-shot linear probes, so a logistic regression per
class, trained on a few labelled windows, covers the target classes a model was never trained
on. A head is portable data, never a pickle: ``head.npz`` holds the weights [D, C] and bias
[C] (feature standardisation folded in), ``head.json`` the classes, which of them were
trained, and the embedding model's identity, so a head cannot be applied to embeddings of
another model or to another class list.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Sequence

import numpy as np
from apache_beam.io.filesystems import FileSystems

POLICIES = ('missing', 'all', 'blend')
WEIGHTS = 'head.npz'
METADATA = 'head.json'


@dataclasses.dataclass(frozen=True)
class LinearHead:
    classes: tuple[str, ...]      # the target classes, in the run's column order
    trained: np.ndarray           # bool [C]: which classes had training examples
    weights: np.ndarray           # float32 [D, C]
    bias: np.ndarray              # float32 [C]
    model: str                    # the embedding model's identity, e.g. "birdnet-v2.4"
    metrics: dict = dataclasses.field(default_factory=dict)

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """Sigmoid scores [..., C] for embeddings [..., D] (untrained classes: NaN)."""
        logits = np.clip(embedding @ self.weights + self.bias, -30.0, 30.0)
        return np.where(self.trained, 1.0 / (1.0 + np.exp(-logits)), np.nan).astype(np.float32)

    def check_compatible(self, model: str, classes: Sequence[str]) -> None:
        if model != self.model:
            raise ValueError(f'the head was trained on {self.model} embeddings, not {model}')
        if tuple(classes) != self.classes:
            raise ValueError('the head was trained for another class list: '
                             f'{len(self.classes)} classes vs the run\'s {len(classes)}')

    def save(self, directory: str) -> None:
        if not FileSystems.exists(directory):
            FileSystems.mkdirs(directory)
        with FileSystems.create(FileSystems.join(directory, WEIGHTS)) as handle:
            np.savez(handle, weights=self.weights, bias=self.bias, trained=self.trained)
        metadata = {'model': self.model, 'classes': list(self.classes),
                    'trained_classes': [c for c, t in zip(self.classes, self.trained) if t],
                    'embedding_dim': int(self.weights.shape[0]), 'metrics': self.metrics}
        with FileSystems.create(FileSystems.join(directory, METADATA)) as handle:
            handle.write(json.dumps(metadata, indent=2).encode('utf-8'))

    @classmethod
    def load(cls, directory: str) -> 'LinearHead':
        with FileSystems.open(FileSystems.join(directory, METADATA)) as handle:
            metadata = json.loads(handle.read().decode('utf-8'))
        with FileSystems.open(FileSystems.join(directory, WEIGHTS)) as handle:
            arrays = np.load(handle, allow_pickle=False)
            weights, bias, trained = arrays['weights'], arrays['bias'], arrays['trained']
        if weights.shape != (metadata['embedding_dim'], len(metadata['classes'])):
            raise ValueError(f'{directory}: weights of shape {weights.shape} do not match '
                             f'{METADATA}')
        return cls(tuple(metadata['classes']), trained.astype(bool),
                   weights.astype(np.float32), bias.astype(np.float32), metadata['model'],
                   metadata.get('metrics', {}))


def combine(model_scores: np.ndarray, head_scores: np.ndarray, model_has: np.ndarray,
            policy: str) -> np.ndarray:
    """Merges model and head scores for one window ([C] each) under ``policy``.

    - ``missing``: the head fills only the classes the model lacks;
    - ``all``: the head replaces every class it was trained for;
    - ``blend``: the mean of both where both exist, the head alone where the model lacks it.
    A class the head was not trained for keeps the model's score (or the missing score).
    """
    if policy not in POLICIES:
        raise ValueError(f'head policy must be one of {POLICIES}, not {policy!r}')
    has_head = ~np.isnan(head_scores)
    if policy == 'missing':
        use = has_head & ~model_has
        return np.where(use, head_scores, model_scores).astype(np.float32)
    if policy == 'all':
        return np.where(has_head, head_scores, model_scores).astype(np.float32)
    blended = np.where(model_has, (model_scores + head_scores) / 2, head_scores)
    return np.where(has_head, blended, model_scores).astype(np.float32)
