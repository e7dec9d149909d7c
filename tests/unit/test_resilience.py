"""Unit tests of `@retry` and `@circuit_breaker` (module_sdk.retrying, module_sdk.breaker): plain
and async functions, the defaults from `error_handling:`, the counts and the log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from module_sdk import CircuitBreaker, CircuitOpenError, circuit_breaker, resilience, retry
from module_sdk.retrying import _backoff


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    """No waits, counts from 0, and the defaults put back after each test."""
    resilience.reset_counts()
    with resilience.no_backoff():
        before = resilience.configure(module="mod-test")
        yield
    resilience.configure(**vars(before))
    resilience.reset_counts()


class Flaky:
    """Raises `error` the first `failures` calls, then returns the number of calls."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return self.calls


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= 30]


# -- retry -------------------------------------------------------------------------------------


def test_bare_retry_fails_twice_then_succeeds_counted_and_logged_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(2)
    fetch = retry(flaky)
    with caplog.at_level(logging.INFO):
        assert fetch() == 3
    assert resilience.counts() == {"retries": 2, "breaker_opens": 0}
    lines = _warnings(caplog, "module_sdk.retrying")
    assert len(lines) == 2, lines
    assert all(line.startswith("mod-test: ") for line in lines), lines
    assert "attempt 1 of 3, ConnectionError: failure 1" in lines[0]
    assert "attempt 2 of 3, ConnectionError: failure 2" in lines[1]


def test_the_last_failure_is_raised_as_it_is_after_max_attempts() -> None:
    flaky = Flaky(10)
    fetch = retry(max_attempts=4, exceptions=(ConnectionError,))(flaky)
    with pytest.raises(ConnectionError, match="failure 4"):
        fetch()
    assert flaky.calls == 4
    assert resilience.counts()["retries"] == 3


def test_other_exceptions_are_not_retried() -> None:
    flaky = Flaky(1, error=ValueError)
    fetch = retry(exceptions=ConnectionError)(flaky)
    with pytest.raises(ValueError, match="failure 1"):
        fetch()
    assert flaky.calls == 1
    assert resilience.counts()["retries"] == 0


def test_empty_parentheses_and_the_configured_default_read_at_each_call() -> None:
    flaky = Flaky(100)
    fetch = retry()(flaky)
    resilience.configure({"retry_max_attempts": 5, "bogus": 1, "retry_wait_min": "x"})
    with pytest.raises(ConnectionError):
        fetch()
    assert flaky.calls == 5
    assert resilience.defaults().retry_wait_min == 0.0  # a value of the wrong type is ignored


def test_arguments_and_return_value_pass_through() -> None:
    @retry
    def add(a: int, b: int = 0, *, c: int = 0) -> int:
        return a + b + c

    assert add(1, 2, c=3) == 6
    assert add.__name__ == "add"


def test_an_open_circuit_is_not_retried() -> None:
    calls = 0

    @retry(max_attempts=5)
    def refused() -> None:
        nonlocal calls
        calls += 1
        raise CircuitOpenError("open")

    with pytest.raises(CircuitOpenError):
        refused()
    assert calls == 1


def test_async_retry_fails_twice_then_succeeds() -> None:
    attempts = 0

    @retry(max_attempts=3, exceptions=(ConnectionError,))
    async def fetch(value: str) -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts < 3:
            raise ConnectionError("refused")
        return value

    assert asyncio.run(fetch("ok")) == "ok"
    assert attempts == 3
    assert resilience.counts()["retries"] == 2


def test_async_retry_gives_up_with_the_last_exception() -> None:
    @retry(max_attempts=2)
    async def never() -> None:
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError, match="slow"):
        asyncio.run(never())
    assert resilience.counts()["retries"] == 1


def test_backoff_doubles_with_up_to_ten_percent_jitter_and_a_ceiling() -> None:
    waits = [_backoff(0.5, 3.0, SimpleNamespace(attempt_number=n)) for n in range(1, 6)]  # type: ignore[arg-type]
    for wait, base in zip(waits, (0.5, 1.0, 2.0, 3.0, 3.0), strict=True):
        assert min(base, 3.0) <= wait <= min(base * 1.1, 3.0), waits
    assert _backoff(0.0, 0.0, SimpleNamespace(attempt_number=7)) == 0.0  # type: ignore[arg-type]
    huge = _backoff(1.0, 10.0, SimpleNamespace(attempt_number=10_000))  # type: ignore[arg-type]
    assert huge == 10.0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 0}, ValueError),
        ({"max_attempts": True}, ValueError),
        ({"wait_min": -1}, ValueError),
        ({"wait_max": float("nan")}, ValueError),
        ({"exceptions": (1,)}, TypeError),
        ({"exceptions": ()}, TypeError),
        ({"exceptions": "ConnectionError"}, TypeError),
    ],
)
def test_bad_retry_arguments_fail_where_the_decorator_is_written(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        retry(**kwargs)


def test_retry_with_a_positional_number_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="keyword arguments"):
        retry(3)  # type: ignore[call-overload]


def test_settings_that_do_not_fit_together_are_ignored_not_fatal() -> None:
    before = resilience.defaults()
    resilience.configure({"retry_wait_min": 9.0, "retry_wait_max": 1.0})
    resilience.configure(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert resilience.defaults() == before


def test_bad_configure_values_are_refused() -> None:
    with pytest.raises(ValueError):
        resilience.configure(retry_wait_min=5.0, retry_wait_max=1.0)
    with pytest.raises(TypeError):
        resilience.configure(nonsense=1)


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"max_attempts": 1.5}, "max_attempts: expected an integer >= 1"),
        ({"max_attempts": True}, "max_attempts: expected an integer >= 1"),
        ({"wait_min": 5, "wait_max": 1}, "wait_min (5) is over wait_max (1)"),
    ],
)
def test_retry_arguments_that_make_no_sense_are_refused(
    arguments: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        retry(**arguments)


# -- circuit breaker -------------------------------------------------------------------------


def test_breaker_opens_after_fail_max_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(100)
    guarded = circuit_breaker(fail_max=3, reset_timeout=60)(flaky)
    with caplog.at_level(logging.INFO):
        for expected in ("failure 1", "failure 2", "failure 3"):  # the real error, tripping too
            with pytest.raises(ConnectionError, match=expected):
                guarded()
        for _ in range(5):
            with pytest.raises(CircuitOpenError, match="is open"):
                guarded()
    assert flaky.calls == 3  # refused calls never ran
    assert resilience.counts() == {"retries": 0, "breaker_opens": 1}
    lines = _warnings(caplog, "module_sdk.breaker")
    assert len(lines) == 1, lines
    assert lines[0].startswith("mod-test: circuit breaker ")
    assert "open for 60s" in lines[0] and "ConnectionError: failure 3" in lines[0]


def test_bare_breaker_uses_the_configured_defaults() -> None:
    resilience.configure(circuit_breaker_fail_max=2)
    flaky = Flaky(100)
    guarded = circuit_breaker(flaky)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            guarded()
    with pytest.raises(CircuitOpenError):
        guarded()
    assert flaky.calls == 2


def test_a_success_resets_the_count_and_excluded_errors_count_as_success() -> None:
    breaker = CircuitBreaker("db", fail_max=2, exceptions=(ConnectionError,))
    outcomes = iter([ConnectionError, None, ConnectionError, ValueError, ConnectionError])

    @breaker
    def call() -> None:
        error = next(outcomes)
        if error is not None:
            raise error("x")

    for _ in range(5):
        with contextlib.suppress(ConnectionError, ValueError):
            call()
        assert breaker.state == "closed"  # never two failures in a row
    assert breaker.state == "closed"
    assert breaker.failures == 1


def test_trial_after_reset_timeout_closes_or_reopens() -> None:
    breaker = CircuitBreaker("api", fail_max=1, reset_timeout=0)
    fail = True

    @breaker
    def call() -> str:
        if fail:
            raise ConnectionError("down")
        return "up"

    with pytest.raises(ConnectionError):
        call()  # opens
    with pytest.raises(ConnectionError):
        call()  # the trial (timeout 0), failed: opens again
    assert resilience.counts()["breaker_opens"] == 2
    fail = False
    assert call() == "up"  # the next trial closes it
    assert breaker.state == "closed"
    assert call() == "up"


def test_only_one_trial_runs_while_half_open() -> None:
    breaker = CircuitBreaker("slow", fail_max=1, reset_timeout=0)
    entered, release = threading.Event(), threading.Event()
    mode = "fail"

    @breaker
    def call() -> str:
        if mode == "fail":
            raise ConnectionError("down")
        entered.set()
        assert release.wait(10)
        return "ok"

    with pytest.raises(ConnectionError):
        call()
    mode = "block"
    results: list[str] = []
    trial = threading.Thread(target=lambda: results.append(call()))
    trial.start()
    assert entered.wait(10)
    assert breaker.state == "half-open"
    with pytest.raises(CircuitOpenError, match="trial"):
        call()
    release.set()
    trial.join(10)
    assert results == ["ok"]
    assert breaker.state == "closed"


def test_calls_through_one_breaker_run_concurrently() -> None:
    """pybreaker alone holds its lock during a call; here two calls are inside at once."""
    both_inside = threading.Barrier(2, timeout=10)

    @circuit_breaker(fail_max=5)
    def call() -> None:
        both_inside.wait()  # breaks (BrokenBarrierError) if the calls were serialised

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert not both_inside.broken


def test_async_breaker_opens_and_refuses() -> None:
    calls = 0

    @circuit_breaker(fail_max=2, reset_timeout=60, exceptions=(TimeoutError,))
    async def post() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise TimeoutError("slow")

    async def run() -> list[str]:
        seen = []
        for _ in range(4):
            try:
                await post()
            except (TimeoutError, CircuitOpenError) as exc:
                seen.append(type(exc).__name__)
        return seen

    assert asyncio.run(run()) == [
        "TimeoutError",
        "TimeoutError",
        "CircuitBreakerError",
        "CircuitBreakerError",
    ]
    assert calls == 2
    assert resilience.counts()["breaker_opens"] == 1


def test_a_cancelled_async_call_counts_as_nothing() -> None:
    breaker = CircuitBreaker("c", fail_max=1)

    @breaker
    async def hang() -> None:
        await asyncio.sleep(60)

    async def run() -> None:
        task = asyncio.create_task(hang())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert breaker.state == "closed" and breaker.failures == 0


def test_retry_around_a_breaker_stops_at_the_open_circuit() -> None:
    flaky = Flaky(100)
    call = retry(max_attempts=10)(circuit_breaker(fail_max=2)(flaky))
    with pytest.raises(CircuitOpenError):
        call()
    assert flaky.calls == 2
    assert resilience.counts() == {"retries": 2, "breaker_opens": 1}


def test_reset_closes_the_circuit() -> None:
    breaker = CircuitBreaker("r", fail_max=1, reset_timeout=60)
    guarded = breaker(Flaky(1))
    with pytest.raises(ConnectionError):
        guarded()
    assert breaker.state == "open"
    breaker.reset()
    assert guarded() == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"fail_max": 0}, {"reset_timeout": -1}, {"exceptions": (object,)}],
)
def test_bad_breaker_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        circuit_breaker(**kwargs)


def test_the_testing_helpers_for_module_authors(no_backoff: None) -> None:
    """What the README shows: the `no_backoff` fixture and `resilience_counts()`."""
    from module_sdk.testing import resilience_counts

    resilience.configure(retry_wait_min=5.0, retry_wait_max=5.0)  # inside: waits of 5 s ...
    with resilience.no_backoff():  # ... made 0 again by the context manager
        assert (resilience.defaults().retry_wait_min, resilience.defaults().retry_wait_max) == (
            0.0,
            0.0,
        )
        assert retry(Flaky(2))() == 3
    assert resilience.defaults().retry_wait_min == 5.0  # and put back after
    assert resilience_counts() == {"retries": 2, "breaker_opens": 0}


def test_a_call_admitted_before_the_circuit_opened_does_not_decide_the_trial() -> None:
    """A slow call that began while the circuit was closed and fails after it opened (and after
    its timeout) is stale: the trial call's success closes the circuit."""
    breaker = CircuitBreaker("stale", fail_max=1, reset_timeout=0.01)
    late, started = threading.Event(), threading.Event()
    trial_may_end, trial_in = threading.Event(), threading.Event()

    @breaker
    def slow() -> None:
        started.set()
        late.wait(5)
        raise ConnectionError("late")

    @breaker
    def fails() -> None:
        raise ConnectionError("now")

    @breaker
    def trial() -> int:
        trial_in.set()
        trial_may_end.wait(5)
        return 1

    def run_slow() -> None:
        with contextlib.suppress(ConnectionError):
            slow()

    first = threading.Thread(target=run_slow)
    first.start()
    assert started.wait(5)
    with contextlib.suppress(ConnectionError):
        fails()  # opens the circuit
    assert breaker.state == "open"

    def try_trial() -> None:
        with contextlib.suppress(CircuitOpenError):  # refused until reset_timeout passed
            trial()

    def admitted() -> bool:
        second = threading.Thread(target=try_trial)
        second.start()
        threads.append(second)
        return trial_in.wait(0.05)

    threads: list[threading.Thread] = []
    deadline = 50
    while not admitted() and deadline:  # once reset_timeout passed, one call is the trial
        deadline -= 1
    assert trial_in.is_set()
    late.set()
    first.join(5)  # its failure arrives while the trial runs
    assert breaker.state == "half-open"
    trial_may_end.set()
    for thread in threads:
        thread.join(5)
    assert breaker.state == "closed"
