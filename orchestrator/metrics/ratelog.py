"""A log call that a client can trigger at will, kept to one line per interval: a hostile client
or module must not fill the supervisor's log."""

from __future__ import annotations

import logging
import time

INTERVAL = 10.0  # seconds between two lines of one kind


class RateLimitedLog:
    """Logs at most once per `interval` seconds, saying how many were held back meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self._log = logger
        self._interval = interval
        self._next = 0.0
        self.suppressed = 0

    def __call__(self, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return
        self._next = now + self._interval
        if self.suppressed:
            message += f" ({self.suppressed} more like it held back)"
            self.suppressed = 0
        self._log.log(level, message, *args, exc_info=exc_info)
