"""Keeps a long job's native heap from growing with the audio it has seen.

Each shard passes several multi-megabyte arrays through a process (decoded samples, resampled
windows, model batches). glibc serves large blocks with ``mmap`` and returns them on free, but
its threshold for doing so is dynamic: after the first large block is freed it rises to that
block's size, and from then on such arrays come from the heap arenas, whose free space is
fragmented and rarely returned. Over a day-long recording that showed as resident memory
growing with length (bench/RESULTS.md). Fixing the threshold at glibc's initial 128 KiB, and
trimming the heap top above the same size, keeps big arrays on ``mmap`` for the whole job.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024
_LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def bound_native_heap() -> bool:
    """Sets this process's glibc thresholds once; False where there is no glibc (macOS,
    Windows, musl), where nothing changes."""
    name = ctypes.util.find_library('c')
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    done = all(mallopt(option, THRESHOLD_BYTES) == 1
               for option in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
    if not done:
        _LOG.warning('Could not set the malloc thresholds; memory may grow on long jobs')
    return done
