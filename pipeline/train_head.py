"""Trains a linear head on labelled window embeddings: ``python -m pipeline.train_head``.

    python -m pipeline.run --train_metadata train_metadata.csv --output EMB   # embeddings
    python -m pipeline.train_head --embeddings EMB --classes FILE --output HEAD
    python -m pipeline.run --input ... --head HEAD [--head_policy missing|all|blend]

One logistic regression per target class that has examples (class-balanced, on standardised
embeddings; the standardisation is folded into the saved weights). Recordings, not windows,
are split into training and validation (windows of one recording are alike, so a split by
window would flatter the head); the validation padded cmAP is printed and saved in
``head.json``, then the head is refitted on all recordings.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from pipeline import score
from transforms.classes import load_classes
from transforms.head import LinearHead

_LOG = logging.getLogger('soundscape_beam')


def read_embeddings(directory: str) -> tuple[pd.DataFrame, str]:
    """The labelled embeddings of a ``--train_metadata`` run, and its model's name."""
    paths = sorted(glob.glob(os.path.join(directory, 'embeddings-*.parquet')))
    if not paths:
        raise FileNotFoundError(f'{directory}: no embeddings-*.parquet (run pipeline.run '
                                'with --train_metadata first)')
    frame = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    if 'labels' not in frame.columns:
        raise ValueError(f'{directory}: the embeddings carry no labels; they come from a '
                         'run without --train_metadata')
    models = sorted(frame['model'].unique())
    if len(models) != 1:
        raise ValueError(f'{directory}: embeddings of several models {models}: never mixed')
    return frame.sort_values('row_id', ignore_index=True), models[0]


def multi_hot(labels: pd.Series, classes: Sequence[str]) -> np.ndarray:
    position = {c: i for i, c in enumerate(classes)}
    targets = np.zeros((len(labels), len(classes)), dtype=np.int8)
    for row, names in enumerate(labels):
        for name in names:
            if name in position:
                targets[row, position[name]] = 1
    return targets


def fit(features: np.ndarray, targets: np.ndarray, regularisation: float, seed: int
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights [D, C], bias [C] and a trained mask [C], standardisation folded in."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
    standard = (features - mean) / scale
    dimension, count = features.shape[1], targets.shape[1]
    weights = np.zeros((dimension, count), dtype=np.float32)
    bias = np.zeros(count, dtype=np.float32)
    trained = np.zeros(count, dtype=bool)
    for c in range(count):
        positives = int(targets[:, c].sum())
        if positives == 0 or positives == len(targets):
            continue  # nothing to learn from: the class keeps the model's (or missing) score
        model = LogisticRegression(C=regularisation, class_weight='balanced', max_iter=2000,
                                   random_state=seed)
        model.fit(standard, targets[:, c])
        weights[:, c] = model.coef_[0] / scale
        bias[c] = model.intercept_[0] - np.sum(model.coef_[0] * mean / scale)
        trained[c] = True
    return weights, bias, trained


def validate(frame: pd.DataFrame, features: np.ndarray, targets: np.ndarray, model: str,
             classes: Sequence[str], args: argparse.Namespace) -> dict:
    """Padded cmAP on held-out recordings, for the classes present in the validation set."""
    split = GroupShuffleSplit(n_splits=1, test_size=args.validation_fraction,
                              random_state=args.seed)
    train, held_out = next(split.split(features, groups=frame['source']))
    weights, bias, trained = fit(features[train], targets[train], args.C, args.seed)
    head = LinearHead(tuple(classes), trained, weights, bias, model)
    present = trained & (targets[held_out].sum(axis=0) > 0)
    if not present.any():
        return {'validation_recordings': int(frame['source'].iloc[held_out].nunique()),
                'validation_classes': 0}
    names = [c for c, p in zip(classes, present) if p]
    solution = pd.DataFrame(targets[held_out][:, present], columns=names)
    predicted = pd.DataFrame(head.scores(features[held_out])[:, present], columns=names)
    prevalence = pd.DataFrame(np.tile(solution.mean().to_numpy(), (len(solution), 1)),
                              columns=names)
    return {
        'validation_recordings': int(frame['source'].iloc[held_out].nunique()),
        'validation_windows': int(len(held_out)),
        'validation_classes': len(names),
        'validation_padded_cmap': score.padded_cmap(solution, predicted),
        'chance_padded_cmap': score.padded_cmap(solution, prevalence),
    }


def train(args: argparse.Namespace) -> LinearHead:
    frame, model = read_embeddings(args.embeddings)
    classes = load_classes(args.classes)
    features = np.stack(frame['embedding'].to_numpy()).astype(np.float32)
    targets = multi_hot(frame['labels'], classes)
    metrics = validate(frame, features, targets, model, classes, args)
    weights, bias, trained = fit(features, targets, args.C, args.seed)
    metrics.update(training_recordings=int(frame['source'].nunique()),
                   training_windows=int(len(frame)), trained_classes=int(trained.sum()))
    head = LinearHead(tuple(classes), trained, weights, bias, model, metrics)
    head.save(args.output)
    return head


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    parser = argparse.ArgumentParser(prog='python -m pipeline.train_head',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--embeddings', required=True, metavar='DIR',
                        help='Output folder of a pipeline.run --train_metadata run.')
    parser.add_argument('--classes', required=True, metavar='FILE',
                        help='The target classes (list, sample_submission or train_metadata).')
    parser.add_argument('--output', required=True, metavar='HEAD',
                        help='Folder for head.npz and head.json.')
    parser.add_argument('--validation_fraction', type=float, default=0.2,
                        help='Share of recordings held out for validation (default 0.2).')
    parser.add_argument('--C', type=float, default=1.0,
                        help='Inverse L2 regularisation strength (default 1.0).')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    head = train(args)
    print(json.dumps(head.metrics, indent=2))
    print(f'Head for {head.model}: {int(head.trained.sum())} of {len(head.classes)} classes '
          f'trained; written to {args.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
