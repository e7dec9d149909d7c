"""The end of a log file, read without reading the whole of it."""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.regular_file import open_regular


def last_lines(path: Path, count: int, max_bytes: int | None = None) -> list[str]:
    """The last `count` lines of `path` (reading only its end, and at most its last `max_bytes`
    if given); [] if it does not exist."""
    if count == 0:
        return []
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as log_file:
            size = log_file.seek(0, os.SEEK_END)
            block = 8192
            data = b""
            limit = max_bytes if max_bytes is not None else size
            while size > 0 and data.count(b"\n") <= count and len(data) < limit:
                step = min(block, size)
                size -= step
                log_file.seek(size)
                data = log_file.read(step) + data
                block *= 2
    except FileNotFoundError:
        return []
    if max_bytes is not None:
        data = data[-max_bytes:]
    # Lines end at "\n" only: a carriage return in a module's line is part of it (shown as
    # `\r` on a terminal), not a line break, as the rest of its escapes.
    lines = data.decode("utf-8", "replace").split("\n")
    if lines[-1] == "":  # the file ends with its last line's newline
        lines.pop()
    return [line.removesuffix("\r") for line in lines[-count:]]
