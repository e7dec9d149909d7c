"""`@circuit_breaker`: stop calling what keeps failing (pybreaker underneath). For plain and
`async def` functions:

    from module_sdk import CircuitOpenError, circuit_breaker

    @circuit_breaker                         # main.yaml's error_handling defaults
    def query(sql: str) -> list[Any]: ...

    @circuit_breaker(fail_max=3, reset_timeout=30, exceptions=(ConnectionError,))
    async def post(payload: dict) -> None: ...

After `fail_max` calls in a row raised one of `exceptions` (the last one's exception is raised
as it is), the circuit opens: calls raise `CircuitOpenError` at once, without running, for
`reset_timeout` seconds. Then one trial call runs (the others still fail fast until it ends): its
success closes the circuit, its failure opens it again. Each opening is one warning in the
module's log and one in the `breaker_opens` count (`orchestrator status --json`).

`CircuitBreaker(name, ...)` is the same breaker as an object: decorate several functions with one
(`@db`), look at `db.state`, or `db.reset()` it.

pybreaker holds its lock for the whole of a call it runs, which would let one call at a time
through (and cannot await); so here pybreaker keeps the state and counts, fed each outcome once
the call has ended, and the call itself runs outside any lock.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

import pybreaker

from module_sdk import resilience

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
_SHOWN = 200  # characters of an exception's message in the log line

CircuitOpenError = pybreaker.CircuitBreakerError
"""Raised by a call to a function whose circuit breaker is open (the function did not run)."""


class _FailedError(Exception):
    """Stands for a failed call inside pybreaker's accounting."""


def _fail() -> None:
    raise _FailedError


def _succeed() -> None:
    return None


def exception_types(
    exceptions: type[BaseException] | tuple[type[BaseException], ...],
) -> tuple[type[BaseException], ...]:
    """`exceptions` as a tuple of exception classes; TypeError for anything else."""
    types = exceptions if isinstance(exceptions, tuple) else (exceptions,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise TypeError(f"exceptions: expected exception classes, got {exceptions!r}")
    return types


def _check(fail_max: int | None, reset_timeout: float | None) -> None:
    if fail_max is not None and (isinstance(fail_max, bool) or fail_max < 1):
        raise ValueError(f"fail_max: expected an integer >= 1, got {fail_max!r}")
    if reset_timeout is not None and not reset_timeout >= 0:
        raise ValueError(f"reset_timeout: expected seconds >= 0, got {reset_timeout!r}")


class CircuitBreaker:
    """One circuit breaker; calling it on a function returns that function guarded by it.

    `fail_max` and `reset_timeout` not given are `error_handling:`'s
    `circuit_breaker_fail_max` and `circuit_breaker_reset_timeout`, read at the first call."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int | None = None,
        reset_timeout: float | None = None,
        exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    ) -> None:
        _check(fail_max, reset_timeout)
        self.name = name
        self.exceptions = exception_types(exceptions)
        self._fail_max = fail_max
        self._reset_timeout = reset_timeout
        self._lock = threading.Lock()
        self._breaker: pybreaker.CircuitBreaker | None = None  # made at the first call
        self._opened_at = 0.0  # monotonic
        self._trial = False  # a trial call (half-open) is running
        # Bumped as the circuit opens or is reset: the outcome of a call admitted before (it ran
        # while the circuit was closed, and ended after it opened) is stale, not the trial's.
        self._epoch = 0
        self._last_error = ""

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open` (a trial call is running)."""
        with self._lock:
            if self._trial:
                return "half-open"
            return "closed" if self._breaker is None else str(self._breaker.current_state)

    @property
    def failures(self) -> int:
        """Failed calls in a row, as the breaker counts them."""
        with self._lock:
            return 0 if self._breaker is None else int(self._breaker.fail_counter)

    def reset(self) -> None:
        """Close the circuit and forget the failures."""
        with self._lock:
            if self._breaker is not None:
                self._breaker.close()
            self._trial = False
            self._epoch += 1

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if not callable(func):
            raise TypeError(f"a circuit breaker decorates a function, got {func!r}")
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                admitted = self._admit()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    self._record(exc, *admitted)
                    raise
                self._record(None, *admitted)
                return result

            return cast(Callable[P, R], guarded_async)

        @functools.wraps(func)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            admitted = self._admit()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                self._record(exc, *admitted)
                raise
            self._record(None, *admitted)
            return result

        return guarded

    # -- internals ---------------------------------------------------------------------------

    def _admit(self) -> tuple[bool, int]:
        """Whether the call may run as the trial call, and the epoch it was admitted in;
        CircuitOpenError if it may not run."""
        with self._lock:
            breaker = self._breaker
            if breaker is None:
                breaker = self._breaker = self._make()
            if breaker.current_state == pybreaker.STATE_CLOSED:
                return False, self._epoch
            left = self._opened_at + float(breaker.reset_timeout) - time.monotonic()
            if self._trial or left > 0:
                wait = f"{left:.1f}s" if left > 0 else "the trial call"
                raise CircuitOpenError(
                    f"circuit breaker {self.name} is open (retry after {wait}); "
                    f"last failure: {self._last_error}"
                )
            self._trial = True
            return True, self._epoch

    def _record(self, exc: BaseException | None, trial: bool, epoch: int) -> None:
        """Feed pybreaker the outcome of one call. An exception outside `exceptions` counts as a
        success (the dependency answered), and one that is no Exception (a cancellation, an
        exit) as nothing; so does a call admitted before the circuit last opened."""
        with self._lock:
            if trial:
                self._trial = False
            elif epoch != self._epoch:
                return
            breaker = self._breaker
            if breaker is None or (exc is not None and not isinstance(exc, Exception)):
                return
            failed = exc is not None and isinstance(exc, self.exceptions)
            if failed:
                self._last_error = f"{type(exc).__name__}: {exc}"[:_SHOWN]
            with contextlib.suppress(_FailedError, CircuitOpenError):
                breaker.call(_fail if failed else _succeed)

    def _make(self) -> pybreaker.CircuitBreaker:
        defaults = resilience.defaults()
        fail_max = self._fail_max or defaults.circuit_breaker_fail_max
        timeout = self._reset_timeout
        if timeout is None:
            timeout = defaults.circuit_breaker_reset_timeout
        return pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=timeout, name=self.name, listeners=[_Listener(self)]
        )

    def _opened(self, again: bool) -> None:
        """Called (by pybreaker, under our lock) as the circuit opens."""
        self._opened_at = time.monotonic()
        self._epoch += 1
        resilience.count("breaker_opens")
        breaker = self._breaker
        timeout = float(breaker.reset_timeout) if breaker is not None else 0.0
        why = "the trial call failed" if again else f"{self._failures_text()} failures in a row"
        log.warning(
            "%s: circuit breaker %s open for %gs: %s (last: %s); calls fail fast until then",
            resilience.module_name(),
            self.name,
            timeout,
            why,
            self._last_error,
        )

    def _failures_text(self) -> str:
        return str(self._breaker.fail_max) if self._breaker is not None else "?"


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: CircuitBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        new = getattr(new_state, "name", None)
        old = getattr(old_state, "name", None)
        if new == pybreaker.STATE_OPEN:
            self._owner._opened(again=old == pybreaker.STATE_HALF_OPEN)
        elif new == pybreaker.STATE_CLOSED and old == pybreaker.STATE_HALF_OPEN:
            log.info(
                "%s: circuit breaker %s closed: the trial call succeeded",
                resilience.module_name(),
                self._owner.name,
            )


@overload
def circuit_breaker(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def circuit_breaker(
    *,
    fail_max: int | None = None,
    reset_timeout: float | None = None,
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    name: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def circuit_breaker(
    func: Callable[..., Any] | None = None,
    /,
    *,
    fail_max: int | None = None,
    reset_timeout: float | None = None,
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    name: str | None = None,
) -> Any:
    """Guard the decorated function with a circuit breaker of its own (named after it, unless
    `name` is given); see `CircuitBreaker`. Usable bare (`@circuit_breaker`) or with arguments."""

    def decorate(target: Callable[P, R]) -> Callable[P, R]:
        label = name or str(getattr(target, "__qualname__", repr(target)))
        breaker = CircuitBreaker(
            label, fail_max=fail_max, reset_timeout=reset_timeout, exceptions=exceptions
        )
        return breaker(target)

    if func is None:
        _check(fail_max, reset_timeout)  # a mistake shows where the decorator is written
        exception_types(exceptions)
        return decorate
    return decorate(func)
