"""Progress lines: what they say, and that they are throttled."""
from __future__ import annotations

import numpy as np

from transforms.progress import ReportProgress
from transforms.records import ScoredWindow

WINDOW = ScoredWindow('a_5', 'a.wav', 0.0, 5.0, np.zeros(1, np.float32), np.zeros(0, np.float32))


def test_line_reports_done_rate_and_eta():
    progress = ReportProgress(hop_s=5.0, workers=2)
    progress.setup()
    progress._windows = 720  # 1 h of audio by this worker  # pylint: disable=protected-access
    line = progress.line(elapsed_s=36.0, planned_audio_s=4 * 3600.0)
    # 1 h in 36 s is 100x; 2 h of the 4 remain for 2 workers at 100x each: 36 s.
    assert '720 windows, 1.00 h of audio scored (100x real time)' in line
    assert 'job: 4.00 h planned, ETA 0.6 min' in line


def test_lines_are_throttled(capsys):
    quiet, chatty = ReportProgress(5.0, interval_s=3600.0), ReportProgress(5.0, interval_s=0.0)
    for progress in (quiet, chatty):
        progress.setup()
    for _ in range(3):
        assert list(quiet.process(WINDOW, 100.0)) == [WINDOW]
    assert capsys.readouterr().err == ''
    for _ in range(3):
        list(chatty.process(WINDOW, 100.0))
    assert capsys.readouterr().err.count('windows,') == 3
