"""Progress a person can read while a long local job runs, without flooding the log.

Each worker process prints one line at most every ``interval_s`` seconds: the windows and
audio hours it has scored, its rate, and an ETA for the whole job (the audio still to score,
from the planned total, over this worker's rate times the number of workers). On Dataflow
and Flink the ``files``, ``windows`` and ``audio_ms`` counters show the same in their UIs.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterator

import apache_beam as beam

from transforms.records import ScoredWindow


class ReportProgress(beam.DoFn):
    """Passes scored windows through, printing a throttled progress line per worker process."""

    def __init__(self, hop_s: float, workers: int = 1, interval_s: float = 15.0):
        self._hop_s = hop_s
        self._workers = max(1, workers)
        self._interval_s = interval_s

    def setup(self) -> None:
        self._started = self._last = time.monotonic()
        self._windows = 0

    def process(self, window: ScoredWindow, planned_audio_s: float) -> Iterator[ScoredWindow]:
        self._windows += 1
        now = time.monotonic()
        if now - self._last >= self._interval_s:
            self._last = now
            print(self.line(now - self._started, planned_audio_s), file=sys.stderr, flush=True)
        yield window

    def line(self, elapsed_s: float, planned_audio_s: float) -> str:
        done_s = self._windows * self._hop_s
        rate = done_s / elapsed_s if elapsed_s > 0 else 0.0
        remaining_s = max(0.0, planned_audio_s - done_s * self._workers)
        eta = f'{remaining_s / (rate * self._workers) / 60:.1f} min' if rate else '?'
        return (f'[worker {os.getpid()}] {self._windows} windows, {done_s / 3600:.2f} h of '
                f'audio scored ({rate:.0f}x real time); job: {planned_audio_s / 3600:.2f} h '
                f'planned, ETA {eta}')
