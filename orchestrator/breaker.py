"""The one circuit breaker (pybreaker) of the supervisor, for outcomes that are known only later:
a module's start (it said ready, or exited or timed out first) and a webhook's delivery (the
endpoint answered, or the retries ran out).

After `fail_max` failures in a row the circuit opens: nothing is tried for `reset_timeout`
seconds, then one trial (half-open) closes it again on success or reopens it on failure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pybreaker


class _FailedError(Exception):
    """Stands for a failed outcome inside the breaker's accounting."""


def _fail() -> None:
    raise _FailedError


def _succeed() -> None:
    return None


class _Opened(pybreaker.CircuitBreakerListener):
    """Remembers, on the monotonic clock, when the circuit last opened, and tells `on_open`
    (with whether it reopened after a failed trial)."""

    def __init__(self, on_open: Callable[[bool], None] | None) -> None:
        self.at = 0.0
        self.on_open = on_open

    def state_change(self, cb: object, old_state: object, new_state: object) -> None:
        if getattr(new_state, "name", None) != pybreaker.STATE_OPEN:
            return
        self.at = time.monotonic()
        if self.on_open is not None:
            self.on_open(getattr(old_state, "name", None) == pybreaker.STATE_HALF_OPEN)


class Breaker:
    """pybreaker's CircuitBreaker, fed one outcome at a time with `outcome(ok=...)`."""

    def __init__(
        self,
        name: str,
        fail_max: int,
        reset_timeout: float,
        *,
        on_open: Callable[[bool], None] | None = None,
    ) -> None:
        self._opened = _Opened(on_open)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=max(1, fail_max),
            reset_timeout=reset_timeout,
            name=name,
            listeners=[self._opened],
        )

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`."""
        return str(self._breaker.current_state)

    @property
    def is_open(self) -> bool:
        return bool(self._breaker.current_state == pybreaker.STATE_OPEN)

    @property
    def failures(self) -> int:
        """Failures in a row, as the breaker counts them."""
        return int(self._breaker.fail_counter)

    @property
    def fail_max(self) -> int:
        return int(self._breaker.fail_max)

    @property
    def reset_timeout(self) -> float:
        return float(self._breaker.reset_timeout)

    def retry_in(self, now: float) -> float:
        """Seconds (`now` is monotonic) until a trial may be made; 0 when the circuit is closed
        or due a trial."""
        if not self.is_open:
            return 0.0
        return max(0.0, self._opened.at + self.reset_timeout - now)

    def outcome(self, *, ok: bool) -> None:
        """Feed one outcome: a success, or a failure."""
        with contextlib.suppress(_FailedError, pybreaker.CircuitBreakerError):
            self._breaker.call(_succeed if ok else _fail)

    def reset(self) -> None:
        """Close the circuit."""
        self._breaker.close()

    def configure(
        self, fail_max: int, reset_timeout: float, on_open: Callable[[bool], None] | None
    ) -> None:
        """New settings (and whom to tell when it opens), keeping the state it is in: a reload
        that changes them does not close an open circuit."""
        self._breaker.fail_max = max(1, fail_max)
        self._breaker.reset_timeout = reset_timeout
        self._opened.on_open = on_open


class StartBreaker(Breaker):
    """The breaker over one module's starts: a start succeeds when the module says ready and
    fails when it exits or times out first."""

    def __init__(self, name: str, fail_max: int, reset_timeout: float) -> None:
        super().__init__(name, fail_max, reset_timeout)

    def record(self, *, started: bool) -> None:
        """Feed the outcome of one start: it said ready (`started`), or it never did."""
        self.outcome(ok=started)
