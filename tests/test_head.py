"""A head trained on embeddings of generated labelled calls covers classes the model lacks."""
from __future__ import annotations

import dataclasses
import json
import pathlib

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import graph, score, train_head
from tests import audio_fixtures as af
from transforms.audio import Windowing
from transforms.classes import ClassMapping
from transforms.head import LinearHead, combine
from transforms.models.base import ModelSpec
from transforms.training import parse_label_list, read_train_metadata

RATE = 16_000
SPECIES = {'lowchi1': 900.0, 'midchi1': 2500.0, 'higchi1': 5200.0}  # chirp centre, Hz
CLASSES = ['higchi1', 'loud1', 'lowchi1', 'midchi1']
IN_PROCESS = PipelineOptions(['--runner', 'FnApiRunner', '--direct_running_mode', 'in_memory'])


class BandsModel:
    """Embeddings: log energy in 16 bands (a crude spectrogram); one logit, for loudness."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        power = np.abs(np.fft.rfft(batch, axis=1)) ** 2
        bands = np.stack([b.sum(axis=1) for b in np.array_split(power, 16, axis=1)], axis=1)
        rms = np.sqrt(np.mean(batch ** 2, axis=1, keepdims=True))
        return (10 * rms - 1).astype(np.float32), np.log1p(bands).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class BandsSpec(ModelSpec):
    def load(self) -> BandsModel:
        return BandsModel()


BANDS = BandsSpec(name='bands', sample_rate=RATE, labels=('loud1',), window_s=None,
                  embedding_dim=16)


def chirps(seconds: float, calls: list[tuple[float, str]], seed: int) -> np.ndarray:
    """Noise with a 0.4 s rising chirp of each (start second, species)."""
    rng = np.random.default_rng(seed)
    signal = 0.05 * rng.standard_normal(round(seconds * RATE))
    t = np.arange(round(0.4 * RATE)) / RATE
    for start, species in calls:
        centre = SPECIES[species] * rng.uniform(0.95, 1.05)
        call = 0.3 * np.sin(2 * np.pi * (centre * t + 400 * t ** 2)) * np.hanning(len(t))
        begin = round(start * RATE)
        signal[begin:begin + len(call)] += call
    return signal[:, None].astype(np.float32)


def run_job(config: graph.RunConfig) -> None:
    with beam.Pipeline(options=IN_PROCESS) as pipeline:
        graph.build(pipeline, config)


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> tuple[pathlib.Path, LinearHead]:
    """Embeds 24 labelled training recordings through the pipeline, then trains a head."""
    root = tmp_path_factory.mktemp('train')
    rows = []
    for i in range(24):
        species = list(SPECIES)[i % 3]
        filename = f'{species}/XC{i}.wav'
        (root / 'train_audio' / species).mkdir(parents=True, exist_ok=True)
        calls = [(s + 0.5, species) for s in range(0, 10, 2)]
        af.write(root / 'train_audio' / filename, chirps(10.0, calls, seed=i), RATE)
        rows.append({'primary_label': species, 'secondary_labels': '[]', 'filename': filename})
    pd.DataFrame(rows).to_csv(root / 'train_metadata.csv', index=False)
    labels = read_train_metadata(str(root / 'train_metadata.csv'))
    embeddings = root / 'embeddings'
    embeddings.mkdir()
    run_job(graph.RunConfig(
        inputs=tuple(labels), output=str(embeddings), model=BANDS,
        mapping=ClassMapping.build(CLASSES, BANDS.labels), windowing=Windowing(max_windows=1),
        write_embeddings=True, labels_by_source=labels))
    (root / 'classes.txt').write_text('\n'.join(CLASSES))
    head_dir = root / 'head'
    assert train_head.main(['--embeddings', str(embeddings), '--classes',
                            str(root / 'classes.txt'), '--output', str(head_dir)]) == 0
    return embeddings, LinearHead.load(str(head_dir))


def test_training_embeddings_carry_their_recordings_labels(trained):
    embeddings, _ = trained
    frame = pd.concat(pd.read_parquet(p) for p in embeddings.glob('embeddings-*.parquet'))
    assert len(frame) == 24  # max_windows=1: the first window of each recording
    for row in frame.itertuples():
        assert list(row.labels) == [pathlib.Path(row.source).parent.name]
        assert len(row.embedding) == 16 and row.model == 'bands'


def test_head_is_portable_and_knows_its_model(trained):
    _, head = trained
    assert head.model == 'bands' and head.classes == tuple(CLASSES)
    assert head.trained.tolist() == [True, False, True, True]  # no loud1 examples
    assert head.weights.shape == (16, 4) and head.weights.dtype == np.float32
    assert head.metrics['validation_classes'] >= 2
    assert head.metrics['validation_padded_cmap'] >= 0.99 > head.metrics['chance_padded_cmap']
    with pytest.raises(ValueError, match='trained on bands embeddings, not birdnet'):
        head.check_compatible('birdnet-v2.4', CLASSES)
    with pytest.raises(ValueError, match='another class list'):
        head.check_compatible('bands', CLASSES[:3])


def test_head_beats_chance_on_held_out_soundscapes(trained, tmp_path):
    """New recordings, a known species per window: model-only vs model+head padded cmAP."""
    _, head = trained
    rng = np.random.default_rng(99)
    truth = {}
    audio = tmp_path / 'soundscapes'
    audio.mkdir()
    for i in range(6):
        calls, present = [], []
        for w in range(6):
            species = rng.choice([None, *SPECIES])
            present.append(species)
            if species:
                calls.append((5 * w + rng.uniform(0.5, 4.0), species))
        af.write(audio / f'site_{i}.wav', chirps(30.0, calls, seed=100 + i), RATE)
        truth.update({f'site_{i}_{5 * (w + 1)}': s for w, s in enumerate(present)})
    mapping = ClassMapping.build(CLASSES, BANDS.labels)
    outputs = {}
    for name, with_head in (('model', None), ('head', head)):
        outputs[name] = tmp_path / name
        outputs[name].mkdir()
        run_job(graph.RunConfig(inputs=(str(audio / '*.wav'),), output=str(outputs[name]),
                                model=BANDS, mapping=mapping, windowing=Windowing(),
                                write_embeddings=True, head=with_head))
    submissions = {n: pd.read_csv(o / 'submission.csv').set_index('row_id')
                   for n, o in outputs.items()}
    species = list(SPECIES)
    solution = pd.DataFrame([[int(truth[r] == s) for s in species]
                             for r in submissions['model'].index],
                            columns=species, index=submissions['model'].index)
    model_only = score.padded_cmap(solution, submissions['model'][species])
    with_head = score.padded_cmap(solution, submissions['head'][species])
    assert (submissions['model'][species] == 0.0).all().all()  # the model lacks them
    print(f'\nheld-out padded cmAP over {len(species)} classes the model lacks '
          f'({len(solution)} windows): model only {model_only:.3f}, model+head {with_head:.3f}')
    assert with_head > 0.9 and with_head - model_only > 0.3, (model_only, with_head)
    # The 'missing' policy changes exactly the missing columns.
    pd.testing.assert_series_equal(submissions['model']['loud1'], submissions['head']['loud1'])


@pytest.mark.parametrize('policy, expected', [
    ('missing', [0.2, 0.9, 0.0]),
    ('all', [0.6, 0.9, 0.0]),
    ('blend', [0.4, 0.9, 0.0]),
])
def test_policies(policy, expected):
    model_scores = np.array([0.2, 0.0, 0.0], dtype=np.float32)
    head_scores = np.array([0.6, 0.9, np.nan], dtype=np.float32)
    model_has = np.array([True, False, False])
    np.testing.assert_allclose(combine(model_scores, head_scores, model_has, policy), expected,
                               rtol=1e-6)


def test_secondary_labels_are_read_as_literals_only(tmp_path):
    assert parse_label_list("['barswa', 'comsan']") == ['barswa', 'comsan']
    assert parse_label_list('[]') == [] and parse_label_list('') == []
    with pytest.raises(ValueError):
        parse_label_list("__import__('os').system('true')")
    metadata = tmp_path / 'train_metadata.csv'
    metadata.write_text('primary_label,secondary_labels,filename\n'
                        'abethr1,"[\'barswa\']",abethr1/XC1.ogg\n')
    plain = read_train_metadata(str(metadata))
    both = read_train_metadata(str(metadata), with_secondary=True)
    path = str(tmp_path / 'train_audio' / 'abethr1' / 'XC1.ogg')
    assert plain == {path: ('abethr1',)} and both == {path: ('abethr1', 'barswa')}
    assert json.dumps(both)  # plain data, no objects
