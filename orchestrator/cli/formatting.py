"""Small formatting helpers of the commands' human-readable output."""

from __future__ import annotations

import re


def duration(seconds: float) -> str:
    """`42s`, `5m03s`, `2h10m`, `3d04h`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


_OBEYED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal acts on, but tab and LF


def terminal_safe(text: str) -> str:
    """`text` with the control characters a terminal would obey (an escape sequence that clears
    the screen or sets its title, a carriage return that overwrites a line) shown as escapes,
    `\\x1b`; newlines and tabs are kept. A module's output is the module's to choose."""
    return _OBEYED.sub(lambda match: repr(match.group())[1:-1], text)
