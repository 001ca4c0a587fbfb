"""A stand-in model with known scores, and recordings it scores, for detections and reports.

Each recording is a run of 5-second windows of constant level (DC), written as float WAV at
the model's rate, so the window the model sees is exactly that level and every score is a
known number:

    level 0.75: barswa sigmoid(2.5) = 0.924, comsan 0.076, mystery1 sigmoid(-0.5) = 0.378
    level 0.25: barswa 0.076, comsan 0.924, mystery1 0.378
    level 0.5:  barswa 0.5, comsan 0.5 (exactly), mystery1 0.378

'absent1' is a target class the model lacks (score 0); 'mystery1' has no eBird taxonomy
entry (empty names).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

import apache_beam as beam
import numpy as np
import soundfile as sf
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import graph, run
from transforms.audio import Windowing
from transforms.classes import ClassMapping
from transforms.models.base import ModelSpec

IN_PROCESS = ['--runner', 'FnApiRunner', '--direct_running_mode', 'in_memory']
RATE = 8000
CLASSES = ('barswa', 'comsan', 'mystery1', 'absent1')


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-np.float32(x))))


HIGH, LOW, MYSTERY = sigmoid(2.5), sigmoid(-2.5), sigmoid(-0.5)


class DcModel:
    """Logits from each window's mean level: [10 (m - 0.5), 10 (0.5 - m), -0.5]."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        level = batch.mean(axis=1)
        logits = np.stack([10 * (level - 0.5), 10 * (0.5 - level), np.full_like(level, -0.5)],
                          axis=1)
        return logits.astype(np.float32), np.zeros((len(batch), 0), np.float32)


@dataclasses.dataclass(frozen=True)
class DcSpec(ModelSpec):
    def load(self) -> DcModel:
        return DcModel()


DC = DcSpec(name='dc', sample_rate=RATE, labels=('barswa', 'comsan', 'mystery1'),
            window_s=None, embedding_dim=0)


def write_levels(path: pathlib.Path, levels: Sequence[float]) -> pathlib.Path:
    """A float WAV of 5-second windows at the given constant levels."""
    samples = np.repeat(np.asarray(levels, dtype=np.float32), 5 * RATE)
    sf.write(path, samples, RATE, format='WAV', subtype='FLOAT')
    return path


def run_dc(inputs: Sequence[pathlib.Path | str], output: pathlib.Path, **config) -> None:
    """Runs the whole graph in-process with the DC model, then writes ``run.json`` as
    ``pipeline.run`` does; ``config``: more RunConfig fields."""
    output.mkdir(parents=True, exist_ok=True)
    run_config = graph.RunConfig(
        inputs=tuple(str(i) for i in inputs), output=str(output), model=DC,
        mapping=ClassMapping.build(CLASSES, DC.labels), windowing=Windowing(), **config)
    pipeline = beam.Pipeline(options=PipelineOptions(IN_PROCESS))
    graph.build(pipeline, run_config)
    result = pipeline.run()
    result.wait_until_finish()
    summary = run.run_summary(run_config, 'FnApiRunner', run.counters(result), wall_s=1.0)
    (output / run.RUN_JSON).write_text(json.dumps(summary))
