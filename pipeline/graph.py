"""Assembles the pipeline: one window's path from file pattern to output row, top to bottom."""
from __future__ import annotations

import argparse
import dataclasses
import posixpath

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from transforms import sinks
from transforms.audio import ReadWindows, Windowing
from transforms.classes import ClassMapping, ToTargetClasses, load_classes
from transforms.models import birdnet, perch
from transforms.models.base import ModelSpec
from transforms.models.handler import AudioModelHandler


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved once in the launcher from the command line."""
    inputs: tuple[str, ...]
    output: str
    model: ModelSpec
    mapping: ClassMapping
    windowing: Windowing
    batch_size: int = 32
    write_embeddings: bool = False
    expected_row_ids: tuple[str, ...] | None = None  # from --sample_submission

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> 'RunConfig':
        if args.model == 'perch':
            model = perch.spec(args.model_handle, probe_embedding=args.write_embeddings)
        else:
            model = birdnet.spec(with_embeddings=args.write_embeddings)
        if model.window_s is not None and model.window_s != args.window_s:
            raise ValueError(f'{model.name} takes {model.window_s:g} s windows, '
                             f'not --window_s {args.window_s:g}')
        expected_row_ids = None
        classes = load_classes(args.classes) if args.classes else None
        if args.sample_submission:
            sample = sinks.read_sample_submission(args.sample_submission)
            expected_row_ids = tuple(sample['row_id'])
            sample_classes = list(sample.columns[1:])
            if classes is not None and classes != sample_classes:
                raise ValueError(f'--classes {args.classes} and --sample_submission '
                                 f'{args.sample_submission} list different classes')
            classes = sample_classes
        mapping = ClassMapping.build(
            classes or load_classes(), model.labels, activation=args.activation,
            sensitivity=args.sensitivity, missing_score=args.missing_class_score)
        return cls(
            inputs=tuple(args.input), output=args.output, model=model, mapping=mapping,
            windowing=Windowing(args.window_s, args.hop_s, args.shard_s),
            batch_size=args.batch_size, write_embeddings=args.write_embeddings,
            expected_row_ids=expected_row_ids)

    def path(self, name: str) -> str:
        return FileSystems.join(self.output, name)


def build(pipeline: beam.Pipeline, config: RunConfig) -> None:
    """Adds the whole job to ``pipeline``."""
    windows, errors = (
        pipeline
        | 'Inputs' >> beam.Create(config.inputs)
        | 'ReadWindows' >> ReadWindows(config.windowing, config.model.sample_rate))
    scored = (
        windows
        | 'RunInference' >> RunInference(AudioModelHandler(config.model, config.batch_size))
        | 'ToTargetClasses' >> beam.ParDo(ToTargetClasses(config.mapping)))

    classes = config.mapping.classes
    _ = scored | 'WriteWindows' >> sinks.WriteParquet(
        config.output, sinks.WINDOWS_PREFIX, sinks.window_schema(classes), config.model.name)
    if config.write_embeddings:
        _ = scored | 'WriteEmbeddings' >> sinks.WriteParquet(
            config.output, sinks.EMBEDDINGS_PREFIX,
            sinks.embedding_schema(config.model.embedding_dim))
    _ = scored | 'WriteSubmission' >> sinks.WriteSubmissionCsv(
        config.path(sinks.SUBMISSION), classes, config.expected_row_ids,
        config.mapping.missing_score)
    _ = errors | 'WriteErrors' >> sinks.WriteErrorsCsv(config.path(sinks.ERRORS_CSV))
