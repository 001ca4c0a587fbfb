"""Assembles the pipeline: one window's path from file pattern to output row, top to bottom."""
from __future__ import annotations

import argparse
import dataclasses

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference

from transforms import sinks
from transforms.audio import ReadWindows, Windowing
from transforms.classes import ClassMapping, ToTargetClasses, load_classes
from transforms.detections import (
    DetectionOutputs, DetectionRule, WriteDetections, species_names)
from transforms.head import LinearHead
from transforms.models import birdnet, perch
from transforms.models.base import ModelSpec
from transforms.models.handler import AudioModelHandler
from transforms.recorder_time import RecorderClock
from transforms.training import read_train_metadata


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved once in the launcher from the command line."""
    inputs: tuple[str, ...]
    output: str
    model: ModelSpec
    mapping: ClassMapping
    windowing: Windowing
    batch_size: int | None = None  # None: the model's own default
    write_embeddings: bool = False
    expected_row_ids: tuple[str, ...] | None = None  # from --sample_submission
    head: LinearHead | None = None
    head_policy: str = 'missing'
    labels_by_source: dict[str, tuple[str, ...]] | None = None  # training audio's labels
    workers: int = 1  # local worker processes, for the progress lines' ETA
    detection_rule: DetectionRule = DetectionRule()
    raven: bool = False      # also a Raven Pro selection table per recording
    audacity: bool = False   # also an Audacity label file per recording
    clock: RecorderClock = RecorderClock()  # reads start times from file names

    @classmethod
    def from_args(cls, args: argparse.Namespace, threads: int | None = None,
                  workers: int = 1) -> 'RunConfig':
        """``threads``: compute threads per loaded model (see ``options.threads_per_worker``);
        ``workers``: local worker processes."""
        labels_by_source = None
        inputs = tuple(args.input or ())
        if args.train_metadata:
            labels_by_source = read_train_metadata(
                args.train_metadata, args.train_audio, args.with_secondary_labels)
            inputs += tuple(labels_by_source)
        embeddings = bool(args.write_embeddings or args.head or labels_by_source)
        if args.model == 'perch':
            model = perch.spec(args.model_handle, probe_embedding=embeddings, threads=threads)
        else:
            model = birdnet.spec(with_embeddings=embeddings, threads=threads)
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
        head = None
        if args.head:
            head = LinearHead.load(args.head)
            head.check_compatible(model.name, mapping.classes)
        max_windows = args.train_windows if labels_by_source else None
        return cls(
            inputs=inputs, output=args.output, model=model, mapping=mapping,
            windowing=Windowing(args.window_s, args.hop_s, args.shard_s, max_windows),
            batch_size=args.batch_size, write_embeddings=embeddings,
            expected_row_ids=expected_row_ids, head=head, head_policy=args.head_policy,
            labels_by_source=labels_by_source, workers=workers,
            detection_rule=DetectionRule(args.min_score, args.top_k), raven=args.raven,
            audacity=args.audacity, clock=RecorderClock(args.timestamp_pattern))

    def model_handler(self) -> AudioModelHandler:
        """RunInference's handler, batching --batch_size windows or the model's default."""
        return AudioModelHandler(self.model, self.batch_size or self.model.batch_size)

    def path(self, name: str) -> str:
        return FileSystems.join(self.output, name)


def build(pipeline: beam.Pipeline, config: RunConfig) -> None:
    """Adds the whole job to ``pipeline``."""
    windows, errors = (
        pipeline
        | 'Inputs' >> beam.Create(config.inputs)
        | 'ReadWindows' >> ReadWindows(config.windowing, config.model.sample_rate,
                                       config.workers))
    scored = (
        windows
        | 'RunInference' >> RunInference(config.model_handler())
        | 'ToTargetClasses' >> beam.ParDo(
            ToTargetClasses(config.mapping, config.head, config.head_policy)))

    classes = config.mapping.classes
    _ = scored | 'WriteWindows' >> sinks.WriteParquet(
        config.output, sinks.WINDOWS_PREFIX,
        sinks.WindowsTable(sinks.window_schema(classes), config.model.name, config.clock))
    if config.write_embeddings:
        schema = sinks.embedding_schema(config.model.embedding_dim,
                                        with_labels=config.labels_by_source is not None)
        _ = scored | 'WriteEmbeddings' >> sinks.WriteParquet(
            config.output, sinks.EMBEDDINGS_PREFIX,
            sinks.EmbeddingsTable(schema, config.model.name, config.labels_by_source))
    _ = scored | 'WriteSubmission' >> sinks.WriteSubmissionCsv(
        config.path(sinks.SUBMISSION), classes, config.expected_row_ids,
        config.mapping.missing_score)
    _ = errors | 'WriteErrors' >> sinks.WriteErrorsCsv(config.path(sinks.ERRORS_CSV))
    _ = scored | 'WriteDetections' >> WriteDetections(
        DetectionOutputs(config.output, config.detection_rule, config.raven, config.audacity,
                         high_freq_hz=config.model.sample_rate / 2),
        species_names(classes), config.clock)
