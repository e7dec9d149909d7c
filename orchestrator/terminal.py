"""What a module wrote, made safe to show on a terminal: used by `logs`, `status NAME` and the
echo of `up` in the foreground."""

from __future__ import annotations

import re

_OBEYED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what a terminal acts on, but tab and LF


def terminal_safe(text: str) -> str:
    """`text` with the control characters a terminal would obey (an escape sequence that clears
    the screen or sets its title, a carriage return that overwrites a line) shown as escapes,
    `\\x1b`; newlines and tabs are kept. A module's output is the module's to choose."""
    return _OBEYED.sub(lambda match: repr(match.group())[1:-1], text)
