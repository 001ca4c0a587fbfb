"""Recorder time: when a recording started, and which recorder made it, from its file name.

Field recorders name each file after the local time it started, and that name is the only
record of it that survives copying. Reading it turns "window 3 of S4A03895_20190522_060000"
into "06:00:10 on 22 May 2019, recorder S4A03895", which is what a survey needs.

Nothing is guessed: a name that matches no pattern, or whose digits are not a real date and
time (``20191340_250000``), has no time, and its outputs leave the columns empty.

Patterns are Python regular expressions matched against the whole file stem (the name
without folder and extension), with named groups ``year`` (4 digits), ``month``, ``day``,
``hour``, ``minute`` (all required), ``second`` (0 when absent) and ``recorder`` (absent or
empty: no recorder).
"""
from __future__ import annotations

import dataclasses
import datetime
import posixpath
import re

REQUIRED_GROUPS = ('year', 'month', 'day', 'hour', 'minute')
_DATE_TIME = (r'(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})_'
              r'(?P<hour>\d{2})(?P<minute>\d{2})(?P<second>\d{2})')
# Wildlife Acoustics Song Meters: PREFIX_YYYYMMDD_HHMMSS, the prefix naming the recorder.
SONG_METER = rf'(?P<recorder>.+)_{_DATE_TIME}'
# AudioMoth: YYYYMMDD_HHMMSS, no recorder name.
AUDIOMOTH = _DATE_TIME
BUILT_IN_PATTERNS = (SONG_METER, AUDIOMOTH)


def file_stem(source: str) -> str:
    """The file name without folder and extension, for local paths and URLs alike."""
    return posixpath.splitext(posixpath.basename(source.replace('\\', '/')))[0]


def iso_time(moment: datetime.datetime) -> str:
    """ISO 8601 without a zone (recorders keep local time); milliseconds only when present."""
    return moment.isoformat(timespec='milliseconds' if moment.microsecond else 'seconds')


@dataclasses.dataclass(frozen=True)
class RecorderTime:
    """What a file name says about a recording: its recorder and start (either may be None)."""
    recorder: str | None = None
    started_at: datetime.datetime | None = None

    def at(self, offset_s: float) -> datetime.datetime | None:
        """The local time ``offset_s`` seconds into the recording, when its start is known."""
        if self.started_at is None:
            return None
        return self.started_at + datetime.timedelta(seconds=offset_s)


@dataclasses.dataclass(frozen=True)
class RecorderClock:
    """Reads recording start times from file names.

    Without ``pattern``, the Song Meter and AudioMoth names are read; with it, only names
    that match it, so that one project's naming is read one way.
    """
    pattern: str | None = None

    def __post_init__(self):
        if self.pattern is None:
            return
        try:
            groups = re.compile(self.pattern).groupindex
        except re.error as exc:
            raise ValueError(f'timestamp pattern {self.pattern!r} is not a regular '
                             f'expression: {exc}') from exc
        absent = [name for name in REQUIRED_GROUPS if name not in groups]
        if absent:
            raise ValueError(f'timestamp pattern {self.pattern!r} lacks the named group(s) '
                             f'{", ".join(absent)}, written like (?P<month>\\d{{2}})')

    @property
    def patterns(self) -> tuple[str, ...]:
        return (self.pattern,) if self.pattern is not None else BUILT_IN_PATTERNS

    def read(self, source: str) -> RecorderTime:
        """The recorder and start time that ``source``'s file name states (else None)."""
        stem = file_stem(source)
        for pattern in self.patterns:
            match = re.fullmatch(pattern, stem)
            started_at = _start_time(match) if match else None
            if started_at is not None:
                return RecorderTime(match.groupdict().get('recorder') or None, started_at)
        return RecorderTime()


def _start_time(match: re.Match) -> datetime.datetime | None:
    """The matched date and time; None when a group did not take part or the date is not real."""
    fields = match.groupdict()
    try:
        return datetime.datetime(*(int(fields[name]) for name in REQUIRED_GROUPS),
                                 int(fields.get('second') or 0))
    except (TypeError, ValueError):
        return None
