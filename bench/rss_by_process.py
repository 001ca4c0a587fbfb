"""Peak memory of each process of a command's tree, and of the tree at once.

    python bench/rss_by_process.py python -m pipeline.run --input ... --output ...

Shows which process (the launcher, a Beam worker) holds the memory that ``bench/run.py``
reports only as sums. RSS counts shared pages in every process that maps them; PSS divides
each shared page between its processes, so PSS sums to what the tree takes from the machine.
"""
from __future__ import annotations

import collections
import subprocess
import sys
import time

import psutil


def main() -> None:
    process = psutil.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss_peaks: dict[int, int] = collections.defaultdict(int)
    pss_peaks: dict[int, int] = collections.defaultdict(int)
    names: dict[int, str] = {}
    rss_total = pss_total = 0
    while process.poll() is None:
        rss_sum = pss_sum = 0
        for member in [process, *process.children(recursive=True)]:
            try:
                memory = member.memory_full_info()
                names[member.pid] = ' '.join(member.cmdline()[1:4])[:80]
            except psutil.Error:
                continue
            rss_peaks[member.pid] = max(rss_peaks[member.pid], memory.rss)
            pss_peaks[member.pid] = max(pss_peaks[member.pid], memory.pss)
            rss_sum, pss_sum = rss_sum + memory.rss, pss_sum + memory.pss
        rss_total, pss_total = max(rss_total, rss_sum), max(pss_total, pss_sum)
        time.sleep(0.1)
    for pid, peak in rss_peaks.items():
        print(f'{pid} RSS {peak >> 20} MB, PSS {pss_peaks[pid] >> 20} MB: {names[pid]}')
    print(f'sum peak: RSS {rss_total >> 20} MB, PSS {pss_total >> 20} MB')


if __name__ == '__main__':
    main()
