"""Peak resident memory of each process of a command's tree, and of the tree at once.

    python bench/rss_by_process.py python -m pipeline.run --input ... --output ...

Shows which process (the launcher, a Beam worker) holds the memory that ``bench/run.py``
reports only as a sum.
"""
from __future__ import annotations

import collections
import subprocess
import sys
import time

import psutil


def main() -> None:
    process = psutil.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks: dict[int, int] = collections.defaultdict(int)
    names: dict[int, str] = {}
    total = 0
    while process.poll() is None:
        together = 0
        for member in [process, *process.children(recursive=True)]:
            try:
                rss = member.memory_info().rss
                names[member.pid] = ' '.join(member.cmdline()[1:4])[:80]
            except psutil.Error:
                continue
            peaks[member.pid] = max(peaks[member.pid], rss)
            together += rss
        total = max(total, together)
        time.sleep(0.1)
    for pid, peak in peaks.items():
        print(f'{pid} {peak >> 20} MB {names[pid]}')
    print(f'sum peak {total >> 20} MB')


if __name__ == '__main__':
    main()
