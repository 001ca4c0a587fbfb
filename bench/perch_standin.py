"""Builds a Perch-sized stand-in SavedModel locally: no download, random weights.

Perch 1.0's shape: 5 s of 32 kHz audio -> a log-mel frontend (500 frames x 160 bins) ->
EfficientNet-B1 -> 1,280-d embedding -> 10,932 logits, behind ``infer_tf([B, 160000]) ->
(logits, embeddings)`` and ``assets/label.csv``. Its speed, not its answers, is what counts.

The classifier's bias starts at -8, as a trained classifier's logits sit far below zero for
the many species absent from a window: with zero biases every one of the 10,932 random logits
is near 0, every target class scores ~0.5, and each window would make ~250 "detections" no
real model makes, so the benchmark would mostly time writing them.

Only the weights and ``infer_tf`` are saved, not the Keras layers' own call functions:
Perch's jax2tf export holds one traced function and its variables, and restoring a few
hundred per-layer functions would add seconds to every worker's start that Perch does not pay.
"""
from __future__ import annotations

import os
import shutil
import sys

import tensorflow as tf
import tf_keras

SAMPLES = 160_000
FRAMES, BINS = 500, 160
ABSENT_LOGIT = -8.0
LABELS = os.path.join(os.path.dirname(__file__), 'data', 'perch_v1_label.csv')


def build(directory: str) -> str:
    with open(LABELS, encoding='utf-8') as handle:
        classes = len(handle.read().split()) - 1
    backbone = tf_keras.applications.EfficientNetB1(
        include_top=False, weights=None, input_shape=(FRAMES, BINS, 1), pooling='avg')
    classifier = tf_keras.layers.Dense(
        classes, bias_initializer=tf_keras.initializers.Constant(ABSENT_LOGIT))
    mel = tf.signal.linear_to_mel_weight_matrix(BINS, 513, 32_000, 60.0, 10_000.0)

    classifier.build((None, backbone.output_shape[-1]))

    class Standin(tf.Module):
        def __init__(self):
            super().__init__()
            # The weights alone are tracked (the layers are reached through the closure).
            self.weights = backbone.variables + classifier.variables

        @tf.function(input_signature=[tf.TensorSpec([None, SAMPLES], tf.float32)])
        def infer_tf(self, audio):
            spectrogram = tf.abs(tf.signal.stft(audio, 1024, SAMPLES // FRAMES, 1024, pad_end=True))
            logmel = tf.math.log(tf.tensordot(spectrogram, mel, 1) + 1e-3)
            embedding = backbone(logmel[:, :FRAMES, :, None], training=False)
            return classifier(embedding), embedding

    module = Standin()
    module.infer_tf(tf.zeros([1, SAMPLES]))
    tf.saved_model.save(module, directory)
    os.makedirs(os.path.join(directory, 'assets'), exist_ok=True)
    shutil.copy(LABELS, os.path.join(directory, 'assets', 'label.csv'))
    return directory


if __name__ == '__main__':
    print(build(sys.argv[1]))
