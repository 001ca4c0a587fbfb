"""Target class lists, the eBird taxonomy, and the mapping from a model's labels to them.

A model scores its own label set (BirdNET: 6,522 labels, Perch 1.0: 10,932 eBird codes); a
run scores a target list (by default BirdCLEF 2023's 264 codes). ``ClassMapping`` is computed
once, in the launcher, as an index per target class into the model's labels, so the per-window
work is one activation and one gather.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import io
import json
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms.head import LinearHead, combine
from transforms.records import InferredWindow, ScoredWindow

DATA = importlib.resources.files('transforms') / 'data'
DEFAULT_CLASSES = 'birdclef2023_classes.txt'
# Maps BirdNET's "Scientific name_Common name" labels to eBird codes and back; from the
# birdnet-analyzer 2.4.0 wheel (MIT licence, see transforms/data/NOTICE).
EBIRD_TAXONOMY = 'eBird_taxonomy_codes_2024E.json'

ACTIVATIONS = ('sigmoid', 'softmax')


def _read_text(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode('utf-8-sig')


def parse_classes(text: str, source: str = '<text>') -> list[str]:
    """Class codes from any of the three layouts users have at hand.

    - a ``sample_submission.csv``: its columns after ``row_id``, in order;
    - a ``train_metadata.csv``: the sorted unique ``primary_label`` values;
    - a plain list: one code per line (blank lines ignored).
    """
    first_line = text.split('\n', 1)[0]
    header = [name.strip() for name in next(csv.reader([first_line]), [])]
    if header and header[0] == 'row_id':
        classes = header[1:]
    elif 'primary_label' in header:
        rows = csv.DictReader(io.StringIO(text))
        classes = sorted({row['primary_label'].strip() for row in rows if row['primary_label']})
    else:
        classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise ValueError(f'{source}: no class codes found')
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        raise ValueError(f'{source}: duplicate class codes {duplicates[:10]}')
    return classes


def load_classes(path: str | None = None) -> list[str]:
    """The target classes from ``path`` (see ``parse_classes``), or BirdCLEF 2023's 264."""
    if path is None:
        return parse_classes((DATA / DEFAULT_CLASSES).read_text(), DEFAULT_CLASSES)
    return parse_classes(_read_text(path), path)


@functools.lru_cache(maxsize=1)
def ebird_taxonomy() -> dict[str, str]:
    """Both directions: ``"Sci name_Common name" -> code`` and ``code -> "Sci name_Common name"``."""
    return json.loads((DATA / EBIRD_TAXONOMY).read_text())


@dataclasses.dataclass(frozen=True)
class ClassMapping:
    """Where each target class sits in a model's outputs (-1: the model lacks it)."""
    classes: tuple[str, ...]
    index: np.ndarray      # int64 [C]
    activation: str = 'sigmoid'
    sensitivity: float = 1.0
    missing_score: float = 0.0

    @classmethod
    def build(cls, classes: Sequence[str], model_labels: Sequence[str], **options
              ) -> 'ClassMapping':
        position = {label: i for i, label in reversed(list(enumerate(model_labels)))}
        index = np.array([position.get(c, -1) for c in classes], dtype=np.int64)
        return cls(tuple(classes), index, **options)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f'activation must be one of {ACTIVATIONS}, not {self.activation!r}')
        if not 0.0 <= self.missing_score <= 1.0:
            raise ValueError(f'missing class score must be in [0, 1], not {self.missing_score}')

    @property
    def missing(self) -> list[str]:
        return [c for c, i in zip(self.classes, self.index) if i < 0]

    def activate(self, logits: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] over the model's full label set ([..., K] -> [..., K]).

        ``sigmoid`` is BirdNET's "flat sigmoid": 1 / (1 + exp(-sensitivity * clip(x, -15, 15)));
        with the default sensitivity 1.0 it is the logistic function, clipped so that no
        float32 score is exactly 0 or 1. ``softmax`` normalises over all K labels first (as the
        seed notebook did), so scores depend on the model's whole label set.
        """
        logits = np.asarray(logits, dtype=np.float32)
        if self.activation == 'softmax':
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            return shifted / shifted.sum(axis=-1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-self.sensitivity * np.clip(logits, -15.0, 15.0)))

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """Target-class scores from logits ([..., K] -> float32 [..., C])."""
        gathered = self.activate(logits)[..., np.maximum(self.index, 0)]
        return np.where(self.index >= 0, gathered, self.missing_score).astype(np.float32)


class ToTargetClasses(beam.DoFn):
    """Turns a window's raw logits into its scores over the target classes.

    With a trained ``head``, the head's scores from the window's embedding are combined
    with the model's under ``head_policy`` (see ``transforms.head.combine``).
    """

    def __init__(self, mapping: ClassMapping, head: LinearHead | None = None,
                 head_policy: str = 'missing'):
        if head is not None and tuple(head.classes) != mapping.classes:
            raise ValueError('the head and the mapping have different classes')
        self._mapping = mapping
        self._head = head
        self._head_policy = head_policy

    def process(self, window: InferredWindow) -> Iterator[ScoredWindow]:
        scores = self._mapping.scores(window.logits)
        if self._head is not None:
            scores = combine(scores, self._head.scores(window.embedding),
                             self._mapping.index >= 0, self._head_policy)
        yield ScoredWindow(window.row_id, window.source, window.start_s, window.end_s,
                           scores, window.embedding)
