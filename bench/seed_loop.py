"""The seed notebook's loop, as it scored a soundscape, for comparison.

librosa at its default 22,050 Hz, librosa's resample to 32 kHz, one model call per 5 s
window, softmax over all labels, then one pandas ``.loc`` assignment per row.

    python bench/seed_loop.py HANDLE FILE...
"""
from __future__ import annotations

import os
import sys

import librosa
import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_hub as hub

from transforms.classes import load_classes
from transforms.models.perch import read_labels


def main() -> None:
    handle, paths = sys.argv[1], sys.argv[2:]
    model = hub.load(handle)
    labels = read_labels(handle)
    classes = [c for c in load_classes() if c in labels]
    index = [labels.index(c) for c in classes]
    rows = []
    for path in paths:
        audio, rate = librosa.load(path)
        audio = librosa.resample(audio, orig_sr=rate, target_sr=32_000)
        stem = os.path.splitext(os.path.basename(path))[0]
        for i in range(int(np.ceil(len(audio) / 160_000))):
            chunk = np.zeros(160_000, dtype=np.float32)
            piece = audio[i * 160_000:(i + 1) * 160_000]
            chunk[:len(piece)] = piece
            logits, _ = model.infer_tf(chunk[None])
            rows.append((f'{stem}_{5 * (i + 1)}', tf.nn.softmax(logits).numpy()[0][index]))
    frame = pd.DataFrame(columns=classes, dtype=np.float32)
    for row_id, scores in rows:
        frame.loc[row_id] = scores
    print(len(frame), 'rows')


if __name__ == '__main__':
    main()
