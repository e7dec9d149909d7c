"""A circuit breaker over one module's starts (pybreaker), for starts whose outcome comes later.

A start succeeds when the module says ready and fails when it exits or times out first. After
`fail_max` failed starts in a row the circuit opens: no start is attempted for `reset_timeout`
seconds, then one trial start (half-open) closes it again on success or reopens it on failure.
"""

from __future__ import annotations

import contextlib
import time

import pybreaker


class _StartFailedError(Exception):
    """Stands for a failed start inside the breaker's accounting."""


def _fail() -> None:
    raise _StartFailedError


def _succeed() -> None:
    return None


class _OpenedAt(pybreaker.CircuitBreakerListener):
    """Remembers, on the monotonic clock, when the circuit last opened."""

    def __init__(self) -> None:
        self.at = 0.0

    def state_change(self, cb: object, old_state: object, new_state: object) -> None:
        if getattr(new_state, "name", None) == pybreaker.STATE_OPEN:
            self.at = time.monotonic()


class StartBreaker:
    """pybreaker's CircuitBreaker, fed the outcome of each start of one module."""

    def __init__(self, name: str, fail_max: int, reset_timeout: float) -> None:
        self._opened = _OpenedAt()
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout, name=name, listeners=[self._opened]
        )

    @property
    def is_open(self) -> bool:
        return bool(self._breaker.current_state == pybreaker.STATE_OPEN)

    @property
    def failures(self) -> int:
        """Failed starts in a row, as the breaker counts them."""
        return int(self._breaker.fail_counter)

    def retry_in(self, now: float) -> float:
        """Seconds until a start may be tried; 0 when the circuit is closed or due a trial."""
        if not self.is_open:
            return 0.0
        return max(0.0, self._opened.at + float(self._breaker.reset_timeout) - now)

    def record(self, *, started: bool) -> None:
        """Feed the outcome of one start: it said ready (`started`), or it never did."""
        with contextlib.suppress(_StartFailedError, pybreaker.CircuitBreakerError):
            self._breaker.call(_succeed if started else _fail)

    def reset(self) -> None:
        """Close the circuit (an operator asked for a restart)."""
        self._breaker.close()
