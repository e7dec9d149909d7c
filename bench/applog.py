"""Reading the supervisor's app.log: every line's wall-clock time (millisecond resolution)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \[\d+\] [\w.]+: (.*)$")


def lines(app_log: Path) -> list[tuple[float, str]]:
    """(unix time, message) of every line of app.log; [] if there is none."""
    if not app_log.exists():
        return []
    found = []
    for line in app_log.read_text().splitlines():
        match = _LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match.group(2)))
    return found


def first_after(
    log: list[tuple[float, str]], after: float, prefix: str
) -> tuple[float, str] | None:
    """The first line at or after `after` (less 2 ms: stamps are truncated) starting `prefix`."""
    for stamp, message in log:
        if stamp >= after - 0.002 and message.startswith(prefix):
            return stamp, message
    return None
