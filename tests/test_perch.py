"""The Perch adapter, the class mapping and a whole Perch run, value by value.

Fake Perch SavedModels (``tests/perch_fixtures.py``) in each calling convention compute known
functions of their input, so every logit, embedding and score is compared with a numpy
expectation from the samples themselves, peak normalisation included.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import tensorflow as tf

from pipeline import graph, options
from pipeline import run as run_module
from tests import perch_fixtures as pf
from transforms.classes import ClassMapping
from transforms.models import perch

TARGETS = tuple((pathlib.Path(__file__).parents[1] / 'transforms' / 'data'
                 / 'birdclef2023_classes.txt').read_text().split())
PRESENT = ('abethr1', 'barswa', 'comsan', 'yetgre1')
ATOL = 1e-5  # float32 TF against float64 numpy: observed error ~1e-6


@pytest.fixture(scope='session')
def perch_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """One fake Perch SavedModel per calling convention, built once (well under a second)."""
    root = tmp_path_factory.mktemp('perch_models')
    return {variant: pf.build_model(root / variant, variant) for variant in pf.VARIANTS}


def test_fixture_targets_are_as_assumed() -> None:
    """Guards the premise of the mapping tests: four labels are targets, the rest are not."""
    assert len(TARGETS) == 264
    assert sorted(set(pf.LABELS) & set(TARGETS)) == list(PRESENT)


def window_batch() -> np.ndarray:
    """Five windows that normalise differently: amplitude, DC offset, noise, a silent one."""
    t = np.arange(pf.WINDOW) / pf.SAMPLE_RATE
    rng = np.random.default_rng(7)
    return np.stack([
        0.8 * np.sin(2 * np.pi * 440 * t) + 0.1,  # loud tone, DC offset
        0.01 * rng.standard_normal(pf.WINDOW),  # faint noise
        -0.3 + 0.05 * np.sin(2 * np.pi * 1000 * t),  # peak is negative
        0.5 * rng.uniform(-1, 1, pf.WINDOW) * (t < 2.5),  # loud, then silence
        np.zeros(pf.WINDOW),  # silent: stays 0
    ]).astype(np.float32)


def test_window_batch_covers_the_cases() -> None:
    """Guards the adapter tests' premise: distinct windows, one peaking negative, one silent."""
    batch = window_batch()
    assert batch.shape == (5, pf.WINDOW) and batch.dtype == np.float32
    peaks = np.abs(batch).max(axis=1)
    assert len(set(peaks.round(6))) == len(batch)
    assert -batch[2].min() > batch[2].max()
    assert peaks[-1] == 0.0


@pytest.mark.parametrize('variant', pf.VARIANTS)
def test_spec_reads_labels_without_loading(perch_models: dict[str, pathlib.Path],
                                           variant: str) -> None:
    handle = str(perch_models[variant])
    spec = perch.spec(handle)
    assert spec.name == f'perch:{handle}'
    assert spec.sample_rate == 32_000 and spec.window_s == 5.0
    assert spec.labels == pf.LABELS  # header line excluded
    assert spec.embedding_dim == 0


@pytest.mark.parametrize('model, flags, batch', [
    ('perch', [], perch.CPU_BATCH), ('perch', ['--batch_size', '256'], 256),
    ('birdnet', [], 8), ('birdnet', ['--batch_size', '2'], 2)])
def test_batch_size_is_the_models_unless_given(perch_models: dict[str, pathlib.Path],
                                               model: str, flags: list[str], batch: int,
                                               tmp_path: pathlib.Path) -> None:
    handle = ['--model_handle', str(perch_models['tuple'])] if model == 'perch' else []
    args, _ = options.parse(['--input', 'x.wav', '--output', str(tmp_path), '--model', model,
                             *handle, *flags])
    handler = graph.RunConfig.from_args(args).model_handler()
    assert handler.batch_elements_kwargs() == {'min_batch_size': batch, 'max_batch_size': batch}


@pytest.mark.parametrize('variant', pf.VARIANTS)
def test_spec_probes_embedding_size(perch_models: dict[str, pathlib.Path],
                                    variant: str) -> None:
    assert perch.spec(str(perch_models[variant]), probe_embedding=True).embedding_dim \
        == pf.EMBEDDING_DIM


@pytest.mark.parametrize('variant', pf.VARIANTS)
def test_infer_normalises_and_returns_model_outputs(perch_models: dict[str, pathlib.Path],
                                                    variant: str) -> None:
    batch = window_batch()
    original = batch.copy()
    logits, embeddings = perch.spec(str(perch_models[variant])).load().infer(batch)

    expected_logits, expected_embeddings = pf.expected_outputs(original)
    assert logits.dtype == np.float32 and embeddings.dtype == np.float32
    assert logits.shape == (len(batch), len(pf.LABELS))
    assert embeddings.shape == (len(batch), pf.EMBEDDING_DIM)
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=ATOL)
    np.testing.assert_allclose(embeddings, expected_embeddings, rtol=0, atol=ATOL)
    # Every non-silent window peaks at exactly 0.25 after normalisation, the silent one at 0.
    np.testing.assert_allclose(np.maximum(embeddings[:, 3], -embeddings[:, 4]),
                               [0.25, 0.25, 0.25, 0.25, 0.0], atol=1e-7)
    np.testing.assert_array_equal(batch, original)  # the caller's windows are not modified


def test_labels_csv_is_accepted(perch_models: dict[str, pathlib.Path],
                                tmp_path: pathlib.Path) -> None:
    """Some Perch releases name the class list ``assets/labels.csv``."""
    model_dir = shutil.copytree(perch_models['tuple'], tmp_path / 'model')
    (model_dir / 'assets' / 'label.csv').unlink()
    pf.write_labels(model_dir, pf.LABELS[::-1], name='labels.csv')
    assert perch.spec(str(model_dir)).labels == pf.LABELS[::-1]


def expected_scores(logits: np.ndarray, activation: str, missing_score: float
                    ) -> np.ndarray:
    """Target-class scores [B, 264] from model logits [B, K], written without classes.py."""
    logits = np.asarray(logits, np.float64)
    if activation == 'sigmoid':
        activated = 1.0 / (1.0 + np.exp(-np.clip(logits, -15.0, 15.0)))
    else:
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        activated = exp / exp.sum(axis=1, keepdims=True)
    scores = np.full((len(logits), len(TARGETS)), missing_score)
    for column, code in enumerate(TARGETS):
        if code in pf.LABELS:
            scores[:, column] = activated[:, pf.LABELS.index(code)]
    return scores


@pytest.mark.parametrize('missing_score', [0.0, 0.25])
@pytest.mark.parametrize('activation', ['sigmoid', 'softmax'])
def test_class_mapping_scores(perch_models: dict[str, pathlib.Path], activation: str,
                              missing_score: float) -> None:
    spec = perch.spec(str(perch_models['dict']))
    mapping = ClassMapping.build(TARGETS, spec.labels, activation=activation,
                                 missing_score=missing_score)
    assert mapping.missing == [c for c in TARGETS if c not in PRESENT]
    assert [TARGETS[i] for i in np.flatnonzero(mapping.index >= 0)] == \
        [c for c in TARGETS if c in PRESENT]

    model_logits, _ = spec.load().infer(window_batch())
    # Plus logits beyond the sigmoid's clip at +-15, and one row where softmax must not overflow.
    extreme = np.array([np.linspace(-40, 40, len(pf.LABELS)),
                        np.linspace(200, 1000, len(pf.LABELS))], np.float32)
    logits = np.concatenate([model_logits, extreme])
    scores = np.stack([mapping.scores(row) for row in logits])

    assert scores.dtype == np.float32 and scores.shape == (len(logits), len(TARGETS))
    np.testing.assert_allclose(scores, expected_scores(logits, activation, missing_score),
                               rtol=1e-5, atol=1e-9)


# Recordings for the end-to-end runs: stem -> seconds at 32 kHz (no resampling happens).
RECORDINGS = {'site_a': 5.0, 'site_b': 12.3, 'site_c': 0.5}
ROW_IDS = ('site_a_5', 'site_b_5', 'site_b_10', 'site_b_15', 'site_c_5')


def recording_signal(seconds: float, seed: int) -> np.ndarray:
    """Mono float32 whose every 5 s window has its own amplitude and DC offset (some silent)."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * pf.SAMPLE_RATE)
    window = np.arange(frames) // pf.WINDOW
    amplitude = rng.uniform(0.05, 0.9, window.max() + 1)
    amplitude[1:2] = 0.0  # a second window, where there is one, is silent
    offset = rng.uniform(-0.2, 0.2, window.max() + 1)
    return ((rng.standard_normal(frames) * 0.3 + offset[window]) * amplitude[window]
            ).astype(np.float32)


def windows_of(signal: np.ndarray) -> np.ndarray:
    """The pipeline's windows of a 32 kHz recording: exact 5 s slices, the last zero-padded."""
    count = -(-len(signal) // pf.WINDOW)
    return np.pad(signal, (0, count * pf.WINDOW - len(signal))).reshape(count, pf.WINDOW)


@dataclasses.dataclass(frozen=True)
class Recordings:
    """The written WAVs' glob, and the windows [len(ROW_IDS), WINDOW] in ``ROW_IDS`` order."""
    pattern: str
    windows: np.ndarray


@pytest.fixture(scope='module')
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    """Writes the float32 WAVs and keeps the windows each row id must hold."""
    folder = tmp_path_factory.mktemp('recordings')
    row_ids, windows = [], []
    for seed, (stem, seconds) in enumerate(RECORDINGS.items()):
        signal = recording_signal(seconds, seed)
        sf.write(folder / f'{stem}.wav', signal, pf.SAMPLE_RATE, subtype='FLOAT')
        for end, samples in enumerate(windows_of(signal), start=1):
            row_ids.append(f'{stem}_{5 * end}')
            windows.append(samples)
    assert tuple(row_ids) == ROW_IDS
    return Recordings(str(folder / '*.wav'), np.stack(windows))


@dataclasses.dataclass(frozen=True)
class PerchRun:
    """One end-to-end run's settings, outputs folder and ``run.json``."""
    activation: str
    variant: str
    missing_score: float
    embeddings: bool
    handle: str
    output: pathlib.Path
    summary: dict

    def expected_scores(self, recordings: Recordings) -> np.ndarray:
        logits, _ = pf.expected_outputs(recordings.windows)
        return expected_scores(logits, self.activation, self.missing_score)


# activation -> (model variant, --missing_class_score, --write_embeddings)
RUNS = {'sigmoid': ('serving_default', 0.25, True), 'softmax': ('tuple', 0.0, False)}


@pytest.fixture(scope='module', params=sorted(RUNS))
def perch_run(request: pytest.FixtureRequest, perch_models: dict[str, pathlib.Path],
              recordings: Recordings,
              tmp_path_factory: pytest.TempPathFactory) -> PerchRun:
    """Runs the whole pipeline in-process on the fake model, once per activation."""
    activation = request.param
    variant, missing_score, embeddings = RUNS[activation]
    handle, output = str(perch_models[variant]), tmp_path_factory.mktemp(f'out_{activation}')
    argv = ['--input', recordings.pattern, '--output', str(output), '--model', 'perch',
            '--model_handle', handle, '--activation', activation,
            '--missing_class_score', str(missing_score), '--batch_size', '2',
            '--runner', 'FnApiRunner', '--direct_num_workers', '1']
    summary = run_module.run(argv + ['--write_embeddings'] * embeddings)
    return PerchRun(activation, variant, missing_score, embeddings, handle, output, summary)


def test_submission_csv(perch_run: PerchRun, recordings: Recordings) -> None:
    frame = pd.read_csv(perch_run.output / 'submission.csv', dtype={'row_id': str})
    assert list(frame.columns) == ['row_id', *TARGETS]
    assert tuple(frame['row_id']) == ROW_IDS
    np.testing.assert_allclose(frame[list(TARGETS)].to_numpy(),
                               perch_run.expected_scores(recordings), rtol=0, atol=1e-5)
    missing = [c for c in TARGETS if c not in PRESENT]
    assert (frame[missing] == perch_run.missing_score).all().all()


def test_windows_parquet(perch_run: PerchRun, recordings: Recordings) -> None:
    shards = sorted(perch_run.output.glob('windows-*.parquet'))
    assert shards
    frame = pd.concat([pd.read_parquet(shard) for shard in shards]).set_index('row_id')
    assert sorted(frame.index) == sorted(ROW_IDS)
    frame = frame.loc[list(ROW_IDS)]
    assert [pathlib.Path(s).stem for s in frame['source']] == \
        [r.rsplit('_', 1)[0] for r in ROW_IDS]
    assert list(frame['start_s']) == [0.0, 0.0, 5.0, 10.0, 0.0]
    assert list(frame['end_s']) == [5.0, 5.0, 10.0, 15.0, 5.0]
    assert (frame['model'] == f'perch:{perch_run.handle}').all()
    scores = frame[list(TARGETS)]
    assert (scores.dtypes == np.float32).all()
    np.testing.assert_allclose(scores.to_numpy(), perch_run.expected_scores(recordings),
                               rtol=0, atol=1e-5)


def test_run_json(perch_run: PerchRun) -> None:
    saved = json.loads((perch_run.output / 'run.json').read_text())
    assert saved == perch_run.summary
    assert saved['missing_classes'] == [c for c in TARGETS if c not in PRESENT]
    assert saved['classes'] == list(TARGETS)
    assert saved['model'] == {'name': f'perch:{perch_run.handle}', 'sample_rate': 32_000,
                              'labels': len(pf.LABELS)}
    assert saved['activation'] == perch_run.activation
    assert saved['missing_class_score'] == perch_run.missing_score
    assert (saved['files'], saved['windows'], saved['errors']) == (3, len(ROW_IDS), {})
    assert saved['audio_seconds'] == pytest.approx(sum(RECORDINGS.values()))


def test_embeddings_parquet(perch_run: PerchRun, recordings: Recordings) -> None:
    """Written only with ``--write_embeddings``: the model's embedding of every window."""
    shards = sorted(perch_run.output.glob('embeddings-*.parquet'))
    if not perch_run.embeddings:
        assert not shards
        return
    assert shards
    frame = pd.concat([pd.read_parquet(shard) for shard in shards]).set_index('row_id')
    assert sorted(frame.index) == sorted(ROW_IDS)
    column = pq.read_schema(shards[0]).field('embedding').type
    assert pa.types.is_fixed_size_list(column) and column.value_type == pa.float32()
    assert column.list_size == pf.EMBEDDING_DIM
    embeddings = np.stack(frame.loc[list(ROW_IDS), 'embedding'].to_list())
    _, expected = pf.expected_outputs(recordings.windows)
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=ATOL)


def test_handle_without_labels_names_it(perch_models: dict[str, pathlib.Path],
                                        tmp_path: pathlib.Path) -> None:
    empty = tmp_path / 'empty'
    empty.mkdir()
    unlabelled = shutil.copytree(perch_models['dict'], tmp_path / 'unlabelled')
    shutil.rmtree(unlabelled / 'assets')
    with pytest.raises(FileNotFoundError, match=re.escape(f'{empty}: no saved_model.pb')):
        perch.spec(str(empty))
    with pytest.raises(FileNotFoundError, match=re.escape(f'{unlabelled}: no assets/label.csv')):
        perch.spec(str(unlabelled))


def test_labels_without_saved_model_fail_fast_naming_it(tmp_path: pathlib.Path) -> None:
    """Labels alone are refused by ``spec``, before any weights would load."""
    pf.write_labels(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f'{tmp_path}: no saved_model.pb')):
        perch.spec(str(tmp_path))


def test_saved_model_without_perch_entry_point_names_it(tmp_path: pathlib.Path) -> None:
    tf.saved_model.save(tf.Module(), str(tmp_path))  # neither infer_tf nor serving_default
    pf.write_labels(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f'{tmp_path}: neither infer_tf')):
        perch.spec(str(tmp_path)).load()


def test_run_with_bad_handle_fails_before_running(recordings: Recordings,
                                                  tmp_path: pathlib.Path) -> None:
    handle = tmp_path / 'not_a_model'
    handle.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(handle))):
        run_module.run(['--input', recordings.pattern, '--output', str(tmp_path / 'out'),
                        '--model', 'perch', '--model_handle', str(handle),
                        '--runner', 'FnApiRunner', '--direct_num_workers', '1'])
    assert not (tmp_path / 'out').exists()
