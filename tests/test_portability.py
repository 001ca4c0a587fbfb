"""What runs off this machine: the package as shipped, the job graph for Dataflow, pickling."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import apache_beam as beam
import cloudpickle
import numpy as np
import pandas as pd

from pipeline import graph, options
from transforms.models import birdnet, perch
from transforms.models.handler import AudioModelHandler

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / 'examples' / 'audio' / 'S4A03895_20190522_060000.wav'


def test_sdist_installs_and_runs_without_the_source_tree(tmp_path):
    """The sdist Dataflow's --setup_file would build carries code and package data."""
    subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (sdist,) = tmp_path.glob('soundscape[-_]beam-*.tar.gz')  # old setuptools: '-'
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                    str(target), str(sdist)], check=True, capture_output=True)
    assert (target / 'transforms' / 'data' / 'birdclef2023_classes.txt').exists()
    assert (target / 'transforms' / 'data' / 'eBird_taxonomy_codes_2024E.json').exists()
    workdir = tmp_path / 'elsewhere'  # not the repository: imports must come from the sdist
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, '-m', 'pipeline.run', '--input', str(EXAMPLE), '--output', 'out',
         '--runner', 'FnApiRunner', '--direct_running_mode', 'in_memory'],
        cwd=workdir, env={**os.environ, 'PYTHONPATH': str(target)}, capture_output=True,
        text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert str(target) in subprocess.run(
        [sys.executable, '-c', 'import transforms; print(transforms.__file__)'], cwd=workdir,
        env={**os.environ, 'PYTHONPATH': str(target)}, capture_output=True, text=True).stdout
    submission = pd.read_csv(workdir / 'out' / 'submission.csv')
    assert submission['row_id'].tolist() == [f'{EXAMPLE.stem}_5', f'{EXAMPLE.stem}_10']


def test_the_job_builds_for_dataflow_without_the_network(tmp_path):
    args, beam_options = options.parse([
        '--input', 'gs://recordings/site7/*.flac', '--output', 'gs://results/site7',
        '--runner', 'DataflowRunner', '--project', 'natural-state', '--region', 'europe-west4',
        '--temp_location', 'gs://results/tmp', '--setup_file', str(ROOT / 'setup.py'),
        '--dry_run=True'])  # Beam's own switch to skip its checks that call GCS
    assert options.threads_per_worker(beam_options) is None  # Dataflow's harness decides
    config = graph.RunConfig.from_args(args)
    pipeline = beam.Pipeline(options=beam_options)
    graph.build(pipeline, config)
    proto = pipeline.to_runner_api()
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert {'ReadWindows/DecodeWindows', 'RunInference', 'WriteSubmission/Write'} <= names
    assert config.path('submission.csv') == 'gs://results/site7/submission.csv'


def test_model_handlers_pickle_and_load_lazily(tmp_path):
    for spec in (birdnet.spec(), birdnet.spec(with_embeddings=True, threads=1)):
        handler = AudioModelHandler(spec, batch_size=8)
        restored = cloudpickle.loads(cloudpickle.dumps(handler))
        assert restored.spec == spec and restored.batch_elements_kwargs()['max_batch_size'] == 8
        assert len(cloudpickle.dumps(handler)) < 1_000_000  # labels only: no weights inside
        model = restored.load_model()
        assert model.infer(np.zeros((1, 240_000), np.float32))[0].shape == (1, 6522)
    perch_spec = perch.PerchSpec(name='perch:/models/perch', sample_rate=32_000,
                                 labels=('a',), window_s=5.0, embedding_dim=0,
                                 handle='/models/perch')
    restored = cloudpickle.loads(cloudpickle.dumps(AudioModelHandler(perch_spec, 4)))
    assert restored.spec.handle == '/models/perch'  # nothing loaded until the worker asks
