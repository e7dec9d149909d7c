"""What a module wrote, made safe to show on a terminal: used by `logs`, `status NAME` and the
echo of `up` in the foreground."""

from __future__ import annotations

import re

# What a terminal acts on, but tab and LF: C0 and C1 controls, and the bidirectional marks,
# embeddings, overrides and isolates, which a terminal that does BiDi (VTE, mlterm, Konsole)
# obeys by reordering what follows (`file_\u202eexe.txt` shows as `file_txt.exe`).
_OBEYED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """`text` with the control characters a terminal would obey (an escape sequence that clears
    the screen or sets its title, a carriage return that overwrites a line, a right-to-left
    override) shown as escapes, `\\x1b`, `\\u202e`; newlines and tabs are kept. A module's
    output is the module's to choose."""
    return _OBEYED.sub(lambda match: repr(match.group())[1:-1], text)
