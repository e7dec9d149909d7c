"""The one circuit breaker over later-known outcomes, as module starts and webhooks use it."""

from __future__ import annotations

import time

from orchestrator.breaker import Breaker, StartBreaker


def test_it_opens_after_fail_max_failures_in_a_row_and_says_so_once() -> None:
    opened: list[bool] = []
    breaker = Breaker("hook", 3, 60.0, on_open=opened.append)
    for _ in range(2):
        breaker.outcome(ok=False)
    breaker.outcome(ok=True)  # a success in between: the count starts again
    assert breaker.failures == 0 and breaker.state == "closed"
    for _ in range(3):
        breaker.outcome(ok=False)
    after = time.monotonic()
    assert breaker.is_open and breaker.state == "open" and opened == [False]
    assert 0 < breaker.retry_in(after) <= 60.0
    assert breaker.retry_in(after + 60) == 0.0  # due a trial
    breaker.outcome(ok=False)  # refused while open: nothing changes
    assert breaker.is_open and opened == [False]


def test_a_trial_closes_or_reopens_it() -> None:
    opened: list[bool] = []
    breaker = Breaker("hook", 1, 0.001, on_open=opened.append)
    breaker.outcome(ok=False)
    while breaker.retry_in(time.monotonic()) > 0:  # bounded by the 1 ms reset timeout
        pass
    breaker.outcome(ok=False)  # the trial fails: open again, noted as a reopening
    assert breaker.is_open and opened == [False, True]
    while breaker.retry_in(time.monotonic()) > 0:
        pass
    breaker.outcome(ok=True)
    assert breaker.state == "closed" and breaker.retry_in(time.monotonic()) == 0.0


def test_the_start_breaker_records_starts_and_an_operator_resets_it() -> None:
    breaker = StartBreaker("mod", 2, 60.0)
    breaker.record(started=False)
    breaker.record(started=False)
    assert breaker.is_open and breaker.failures == 2
    breaker.reset()
    assert not breaker.is_open and breaker.retry_in(time.monotonic()) == 0.0
    breaker.record(started=True)
    assert breaker.failures == 0
