"""Labelled training audio in the BirdCLEF layout, as the pipeline's source.

``train_metadata.csv`` lists one recording a row (``primary_label``, ``secondary_labels``,
``filename``); the audio lies under ``train_audio/<filename>`` next to it. Embedding it is
the same job as scoring soundscapes, with these paths as inputs and each recording's labels
written next to its windows' embeddings.

Which windows: the first ``--train_windows`` windows of each recording (default 6, the first
30 s). Focal recordings mostly start on their bird, and capping the windows keeps a long
recording from outweighing a species' other examples. Every window inherits its recording's
labels (weak labels), as is usual for BirdCLEF training data.
"""
from __future__ import annotations

import ast
import io
import posixpath

import pandas as pd
from apache_beam.io.filesystems import FileSystems


def parse_label_list(text: str) -> list[str]:
    """BirdCLEF's ``secondary_labels`` cell: a Python-style list such as ``['barswa', 'comsan']``."""
    text = (text or '').strip()
    if not text:
        return []
    value = ast.literal_eval(text)  # literals only: never executes code
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'not a list of labels: {text!r}')
    return [v.strip() for v in value if v.strip()]


def read_train_metadata(path: str, audio_dir: str | None = None,
                        with_secondary: bool = False) -> dict[str, tuple[str, ...]]:
    """Maps each training recording's path to its label set (primary label first)."""
    with FileSystems.open(path) as handle:
        frame = pd.read_csv(io.BytesIO(handle.read()), dtype=str, keep_default_na=False)
    missing = {'primary_label', 'filename'} - set(frame.columns)
    if missing:
        raise ValueError(f'{path}: no column {", ".join(sorted(missing))}')
    root = audio_dir or FileSystems.join(posixpath.dirname(path) or '.', 'train_audio')
    labels: dict[str, tuple[str, ...]] = {}
    for row in frame.itertuples(index=False):
        names = [row.primary_label.strip()]
        if with_secondary and 'secondary_labels' in frame.columns:
            names += [n for n in parse_label_list(row.secondary_labels) if n not in names]
        labels[FileSystems.join(root, row.filename)] = tuple(names)
    return labels
