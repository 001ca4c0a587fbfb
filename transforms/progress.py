"""Progress a person can read while a long local job runs, without flooding the log.

Each worker process prints one line at most every ``interval_s`` seconds: the shards and
audio hours it has taken on, its rate, and an ETA for the whole job (the audio still to do,
from the planned total, over this worker's rate times the number of workers). On Dataflow and
Flink the ``files``, ``windows`` and ``audio_ms`` counters show the same in their UIs.

It watches shards on their way into decoding, not scored windows: a step that reads a side
input (the planned total) starts a new fused stage, and there only small shard records cross
the boundary; after decoding, every window of audio would be held between stages. A shard is
decoded and scored in the same stage right after it passes, so the rate is the job's rate.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterator

import apache_beam as beam

from transforms.records import Shard


class ReportProgress(beam.DoFn):
    """Passes shards through, printing a throttled progress line per worker process."""

    def __init__(self, hop_s: float, workers: int = 1, interval_s: float = 15.0):
        self._hop_s = hop_s
        self._workers = max(1, workers)
        self._interval_s = interval_s

    def setup(self) -> None:
        self._started = self._last = time.monotonic()
        self._shards = 0
        self._audio_s = 0.0

    def process(self, shard: Shard, planned_audio_s: float) -> Iterator[Shard]:
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            print(self.line(now - self._started, planned_audio_s), file=sys.stderr, flush=True)
        self._shards += 1
        self._audio_s += shard.num_windows * self._hop_s
        yield shard

    def line(self, elapsed_s: float, planned_audio_s: float) -> str:
        """Reports the shards finished so far (all but the one about to start)."""
        rate = self._audio_s / elapsed_s if elapsed_s > 0 else 0.0
        remaining_s = max(0.0, planned_audio_s - self._audio_s * self._workers)
        eta = f'{remaining_s / (rate * self._workers) / 60:.1f} min' if rate else '?'
        return (f'[worker {os.getpid()}] {self._shards} shards, {self._audio_s / 3600:.2f} h '
                f'of audio scored ({rate:.0f}x real time); job: {planned_audio_s / 3600:.2f} h '
                f'planned, ETA {eta}')
