"""Tiny fake Perch SavedModels whose outputs are a known function of the window.

Real Perch models are hundreds of megabytes behind a download; these build in about a second,
offline, in each of the three calling conventions ``transforms.models.perch`` hides, and
``expected_outputs`` computes in numpy what they must return, so the adapter and everything
downstream of it can be checked value by value.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow as tf

SAMPLE_RATE = 32_000
WINDOW = 160_000  # 5 s at 32 kHz: the one input length Perch takes
TARGET_PEAK = 0.25
VARIANTS = ('tuple', 'dict', 'serving_default')
LABEL_HEADER = 'ebird2021'
# Four BirdCLEF 2023 targets (comsan, yetgre1, abethr1, barswa) among codes that are not
# targets, in neither alphabetical nor target order, so a wrong gather shows.
LABELS = ('houspa', 'comsan', 'amerob', 'yetgre1', 'abethr1', 'norcar', 'barswa', 'eurbla')
# logits[:, k] = POWER[k] * 100 * mean(x^2) + OFFSET[k] * 10 * mean(x)
#                + TILT[k] * 100 * mean(x * ramp) + BIAS[k],  ramp = linspace(-1, 1, WINDOW):
# the tilt makes the outputs depend on where in the window the sound is, not only on its
# distribution, so windows sliced or padded at the wrong place show.
POWER = np.array([1.5, -2.0, 0.5, 3.0, -1.0, 2.5, -3.0, 0.8], np.float32)
OFFSET = np.array([2.0, 1.0, -1.5, 0.5, 3.0, -2.0, 1.2, -0.7], np.float32)
TILT = np.array([0.5, 2.0, -1.0, -2.5, 1.5, 0.0, 3.0, -0.4], np.float32)
BIAS = np.array([-1.0, 0.5, 0.0, -2.0, 1.0, 0.3, -0.5, 2.0], np.float32)
EMBEDDING_DIM = 5  # [mean(x), mean(x^2), mean(x * ramp), max(x), min(x)]
FRONTEND_STEP = 320  # the dict variants' extra 'frontend' output: every 320th sample

_AUDIO = tf.TensorSpec([None, WINDOW], tf.float32)


def expected_outputs(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fake models' (logits [B, K], embeddings [B, D]) for raw, unnormalised windows.

    Applies the peak normalisation the adapter must do before calling the model (a silent
    window stays silent), in float64 and without the adapter's code.
    """
    x = np.asarray(batch, np.float64)
    peak = np.abs(x).max(axis=1, keepdims=True)
    x = x * (TARGET_PEAK / np.where(peak > 0, peak, np.inf))
    power, mean = (x ** 2).mean(axis=1), x.mean(axis=1)
    tilt = (x * np.linspace(-1.0, 1.0, WINDOW)).mean(axis=1)
    logits = (np.outer(power, POWER * 100.0) + np.outer(mean, OFFSET * 10.0)
              + np.outer(tilt, TILT * 100.0) + BIAS)
    embeddings = np.stack([mean, power, tilt, x.max(axis=1), x.min(axis=1)], axis=1)
    return logits, embeddings


def _logits_and_embeddings(audio: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    power = tf.reduce_mean(tf.square(audio), axis=1, keepdims=True)
    mean = tf.reduce_mean(audio, axis=1, keepdims=True)
    tilt = tf.reduce_mean(audio * tf.linspace(-1.0, 1.0, WINDOW), axis=1, keepdims=True)
    logits = power * (POWER * 100.0) + mean * (OFFSET * 10.0) + tilt * (TILT * 100.0) + BIAS
    embeddings = tf.concat([mean, power, tilt, tf.reduce_max(audio, axis=1, keepdims=True),
                            tf.reduce_min(audio, axis=1, keepdims=True)], axis=1)
    return logits, embeddings


def _output_dict(audio: tf.Tensor) -> dict[str, tf.Tensor]:
    logits, embeddings = _logits_and_embeddings(audio)
    return {'label': logits, 'embedding': embeddings, 'frontend': audio[:, ::FRONTEND_STEP]}


class _TupleModel(tf.Module):
    """Perch versions 1-4: ``infer_tf(audio) -> (logits, embeddings)``."""

    @tf.function(input_signature=[_AUDIO])
    def infer_tf(self, audio: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return _logits_and_embeddings(audio)


class _DictModel(tf.Module):
    """Perch version 8: ``infer_tf(audio) -> {'label', 'embedding', 'frontend'}``."""

    @tf.function(input_signature=[_AUDIO])
    def infer_tf(self, audio: tf.Tensor) -> dict[str, tf.Tensor]:
        return _output_dict(audio)


@tf.function(input_signature=[_AUDIO])
def _serving_default(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
    """Perch 2.0's signature: one keyword input named ``inputs``, a dict out."""
    return _output_dict(inputs)


def write_labels(model_dir: pathlib.Path, labels: tuple[str, ...] = LABELS,
                 name: str = 'label.csv') -> None:
    """The class list as Perch ships it: ``assets/<name>``, a header line, one code a line."""
    assets = model_dir / 'assets'
    assets.mkdir(exist_ok=True)
    (assets / name).write_text('\n'.join((LABEL_HEADER, *labels)) + '\n', encoding='utf-8')


def build_model(model_dir: pathlib.Path, variant: str) -> pathlib.Path:
    """Saves the fake Perch of ``variant`` (one of ``VARIANTS``) with its label file."""
    if variant == 'tuple':
        tf.saved_model.save(_TupleModel(), str(model_dir))
    elif variant == 'dict':
        tf.saved_model.save(_DictModel(), str(model_dir))
    elif variant == 'serving_default':
        tf.saved_model.save(tf.Module(), str(model_dir),
                            signatures={'serving_default': _serving_default})
    else:
        raise ValueError(f'unknown variant {variant!r}; expected one of {VARIANTS}')
    write_labels(model_dir)
    return model_dir
