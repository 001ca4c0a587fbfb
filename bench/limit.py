"""The bare model's limit: pre-decoded windows through P processes of T threads each.

Each process loads the model, decodes its share of the files (untimed), waits for the others,
then times inference alone. Throughput = audio seconds / the slowest process's time. BirdNET
gets contiguous 3 s chunks (its cheapest possible use), Perch 5 s windows.

    python bench/limit.py --model birdnet|perch [--handle DIR] --processes 2 --threads 1 \
        --batch 32 FILE...
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import numpy as np
import soundfile as sf
import soxr


def windows(paths: list[str], rate: int, seconds: float) -> np.ndarray:
    size = round(seconds * rate)
    chunks = []
    for path in paths:
        audio, native = sf.read(path, dtype='float32', always_2d=True)
        mono = soxr.resample(audio.mean(axis=1), native, rate, quality='HQ')
        usable = len(mono) // size * size
        chunks.append(mono[:usable].reshape(-1, size))
    return np.concatenate(chunks)


def worker(args: argparse.Namespace, paths: list[str], barrier, results) -> None:
    if args.model == 'birdnet':
        from transforms.models import birdnet  # pylint: disable=import-outside-toplevel
        model, rate, seconds = birdnet.BirdNetModel(
            f'{birdnet.model_dir()}/{birdnet.MODEL_FILE}', False, args.threads), 48_000, 3.0
    else:
        from transforms.models import perch  # pylint: disable=import-outside-toplevel
        model, rate, seconds = perch.PerchModel(args.handle, args.threads), 32_000, 5.0
    batch = windows(paths, rate, seconds)
    model.infer(batch[:args.batch])  # warm-up: first-call graph and buffer set-up
    barrier.wait()
    started = time.perf_counter()
    for start in range(0, len(batch), args.batch):
        model.infer(batch[start:start + args.batch])
    results.put((len(batch) * seconds, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--model', choices=('birdnet', 'perch'), required=True)
    parser.add_argument('--handle')
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('files', nargs='+')
    args = parser.parse_args()
    context = multiprocessing.get_context('spawn')
    barrier, results = context.Barrier(args.processes), context.Queue()
    shares = [args.files[i::args.processes] for i in range(args.processes)]
    processes = [context.Process(target=worker, args=(args, share, barrier, results))
                 for share in shares]
    for process in processes:
        process.start()
    done = [results.get() for _ in processes]
    for process in processes:
        process.join()
    audio_s = sum(a for a, _ in done)
    print(json.dumps({'audio_s': audio_s, 'model_s': max(t for _, t in done)}))


if __name__ == '__main__':
    main()
