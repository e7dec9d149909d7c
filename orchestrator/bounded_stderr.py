"""A detached supervisor's own stderr, bounded: it goes to a file in the run directory, which
nothing rotates, so whatever writes there (a library's warnings in a loop, say) stays small."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, TextIO, cast

STDERR_LIMIT = 64 * 1024  # characters a detached supervisor writes to its output file, at most


class _BoundedOutput:
    """A text stream that passes on its first `limit` characters, then drops the rest (once
    saying so): whatever writes to it, per line or in a loop, the file behind it stays small."""

    def __init__(self, stream: TextIO, limit: int) -> None:
        self._stream = stream
        self._left = limit

    def write(self, text: str) -> int:
        if self._left > 0:
            part, self._left = text[: self._left], self._left - len(text)
            try:
                self._stream.write(part)
                if self._left <= 0:
                    self._stream.write("\n[orchestrator: further output dropped]\n")
                self._stream.flush()
            except (OSError, ValueError):
                self._left = 0
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, encoding, isatty...: the stream's own
        return getattr(self._stream, name)


def bound_stderr(limit: int = STDERR_LIMIT) -> None:
    """Bound what this process writes to sys.stderr from here on (see _BoundedOutput)."""
    if not isinstance(sys.stderr, _BoundedOutput):
        sys.stderr = cast(TextIO, _BoundedOutput(sys.stderr, limit))
    logging.raiseExceptions = False  # other handlers' errors: silent, as logging advises
