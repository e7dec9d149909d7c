"""`@retry`: call a function again when it raises, after an exponential backoff with jitter
(tenacity underneath). For plain and `async def` functions:

    from module_sdk import retry

    @retry                                   # main.yaml's error_handling defaults
    def fetch(url: str) -> bytes: ...

    @retry(max_attempts=5, exceptions=(ConnectionError, TimeoutError), wait_min=0.5, wait_max=8)
    async def send(message: dict) -> None: ...

The wait before retry n is `wait_min x 2^(n-1)` plus up to 10% jitter, at most `wait_max`. When
the last attempt fails, its exception is raised as it is. Each retry is one warning in the
module's log and one in the `retries` count (`orchestrator status --json`). A call refused by an
open circuit breaker (`CircuitOpenError`) is never retried: it would be refused again at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

import tenacity

from module_sdk import resilience
from module_sdk.breaker import CircuitOpenError, exception_types

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
_JITTER = 0.1  # the wait is stretched by up to this fraction, at random
_SHOWN = 200  # characters of an exception's message in the log line


@overload
def retry(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry(
    *,
    max_attempts: int | None = None,
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    wait_min: float | None = None,
    wait_max: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry(
    func: Callable[..., Any] | None = None,
    /,
    *,
    max_attempts: int | None = None,
    exceptions: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    wait_min: float | None = None,
    wait_max: float | None = None,
) -> Any:
    """Retry the decorated function when it raises one of `exceptions`, up to `max_attempts`
    calls in all, waiting `wait_min` seconds before the first retry and doubling (with jitter)
    up to `wait_max`. What is not given comes from `error_handling:` (retry_max_attempts,
    retry_wait_min, retry_wait_max) at each call. Usable bare (`@retry`) or with arguments."""
    if max_attempts is not None and (
        not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1
    ):
        raise ValueError(f"max_attempts: expected an integer >= 1, got {max_attempts!r}")
    for name, wait in (("wait_min", wait_min), ("wait_max", wait_max)):
        if wait is not None and not wait >= 0:
            raise ValueError(f"{name}: expected a number of seconds >= 0, got {wait!r}")
    if wait_min is not None and wait_max is not None and wait_min > wait_max:
        raise ValueError(f"wait_min ({wait_min!r}) is over wait_max ({wait_max!r})")
    policy = _Policy(max_attempts, exception_types(exceptions), wait_min, wait_max)
    if func is None:
        return policy.wrap
    if not callable(func):
        raise TypeError(f"@retry decorates a function, got {func!r} (use keyword arguments)")
    return policy.wrap(func)


class _Policy:
    def __init__(
        self,
        max_attempts: int | None,
        exceptions: tuple[type[BaseException], ...],
        wait_min: float | None,
        wait_max: float | None,
    ) -> None:
        self.max_attempts = max_attempts
        self.exceptions = exceptions
        self.wait_min = wait_min
        self.wait_max = wait_max

    def wrap(self, func: Callable[P, R]) -> Callable[P, R]:
        name = getattr(func, "__qualname__", repr(func))
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                retrying = tenacity.AsyncRetrying(**self._settings(name))
                return await retrying(func, *args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            return tenacity.Retrying(**self._settings(name))(func, *args, **kwargs)

        return run

    def _settings(self, name: str) -> dict[str, Any]:
        """tenacity's arguments for one call, with the defaults in force now."""
        defaults = resilience.defaults()
        attempts = self.max_attempts or defaults.retry_max_attempts
        low = defaults.retry_wait_min if self.wait_min is None else self.wait_min
        high = defaults.retry_wait_max if self.wait_max is None else self.wait_max
        return {
            "stop": tenacity.stop_after_attempt(attempts),
            "wait": functools.partial(_backoff, low, max(low, high)),
            "retry": tenacity.retry_if_exception(self._retryable),
            "before_sleep": functools.partial(_note_retry, name, attempts),
            "reraise": True,
        }

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.exceptions) and not isinstance(exc, CircuitOpenError)


def _backoff(low: float, high: float, state: tenacity.RetryCallState) -> float:
    """Seconds before the next attempt: `low x 2^(n-1)` stretched by up to 10%, at most `high`."""
    exponent = min(state.attempt_number - 1, 64)  # 2^64 seconds is past any `high` already
    return min(high, low * 2.0**exponent * (1 + random.uniform(0, _JITTER)))


def _note_retry(name: str, attempts: int, state: tenacity.RetryCallState) -> None:
    """Count and log one retry (tenacity calls this before each wait)."""
    resilience.count("retries")
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    shown = f"{type(error).__name__}: {error}"[:_SHOWN] if error is not None else "?"
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning(
        "%s: %s failed (attempt %d of %d, %s); retrying in %.2fs",
        resilience.module_name(),
        name,
        state.attempt_number,
        attempts,
        shown,
        wait,
    )
