"""Tests of orchestrator.states: the restart policy, backoff, exit statuses and child states."""

from __future__ import annotations

import math
import signal
from dataclasses import replace
from typing import Any

import pytest

from orchestrator.config import SupervisionSettings
from orchestrator.states import (
    Action,
    ChildState,
    ExitReason,
    ExitStatus,
    backoff_delay,
    decide_after_exit,
)

BASE = SupervisionSettings(
    restart="on-failure",
    max_restarts=3,
    restart_window=60.0,
    backoff_initial=0.1,
    backoff_multiplier=2.0,
    backoff_max=30.0,
)
NOW = 1000.0
FULL = (NOW - 30, NOW - 20, NOW - 10)  # three restarts within the window
OLD = (NOW - 300, NOW - 200, NOW - 100)  # three restarts, all older than the window
MIXED = (NOW - 500, NOW - 61, NOW - 10)  # only the last one within the window
FAILURES = [r for r in ExitReason if r not in (ExitReason.STOPPED, ExitReason.EXITED)]

STOP = (Action.STOP, ChildState.STOPPED)
RESTART = (Action.RESTART, ChildState.BACKOFF)
FAIL = (Action.FAIL, ChildState.FAILED)
DONE = (Action.STOP, ChildState.DONE)

# id, settings overrides, reason, stop_requested, consecutive_failures, recent restarts, expected
CASES: list[tuple[str, dict[str, Any], ExitReason, bool, int, tuple[float, ...], Any]] = [
    *[
        (f"stop-requested-{mode}-{reason.name}", {"restart": mode}, reason, True, 1, (), STOP)
        for mode in ("never", "on-failure", "always")
        for reason in (ExitReason.CRASHED, ExitReason.EXITED, ExitReason.STOPPED)
    ],
    ("stop-requested-beats-limit", {"restart": "always"}, ExitReason.CRASHED, True, 5, FULL, STOP),
    ("never-crash", {"restart": "never"}, ExitReason.CRASHED, False, 1, (), STOP),
    ("never-hung", {"restart": "never"}, ExitReason.HUNG, False, 1, (), STOP),
    ("never-exit", {"restart": "never"}, ExitReason.EXITED, False, 0, (), DONE),
    ("on-failure-exit", {}, ExitReason.EXITED, False, 0, (), STOP),
    ("on-failure-stopped", {}, ExitReason.STOPPED, False, 0, (), STOP),
    *[(f"on-failure-{r.name}", {}, r, False, 1, (), RESTART) for r in FAILURES],
    *[(f"always-{r.name}", {"restart": "always"}, r, False, 1, (), RESTART) for r in FAILURES],
    ("always-exit", {"restart": "always"}, ExitReason.EXITED, False, 0, (), RESTART),
    ("limit-reached", {}, ExitReason.CRASHED, False, 4, FULL, FAIL),
    ("limit-reached-always", {"restart": "always"}, ExitReason.EXITED, False, 0, FULL, FAIL),
    ("limit-exceeded", {}, ExitReason.CRASHED, False, 5, (NOW - 5, *FULL), FAIL),
    ("below-limit", {}, ExitReason.CRASHED, False, 3, FULL[1:], RESTART),
    ("old-restarts-ignored", {}, ExitReason.CRASHED, False, 4, MIXED, RESTART),
    ("all-restarts-old", {}, ExitReason.CRASHED, False, 4, OLD, RESTART),
    ("bigger-window", {"restart_window": 600.0}, ExitReason.CRASHED, False, 4, OLD, FAIL),
    ("never-with-full-window", {"restart": "never"}, ExitReason.CRASHED, False, 4, FULL, STOP),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_decide_after_exit(case: tuple[Any, ...]) -> None:
    _, overrides, reason, stop_requested, failures, recent, expected = case
    decision = decide_after_exit(
        replace(BASE, **overrides),
        reason,
        stop_requested=stop_requested,
        consecutive_failures=failures,
        recent_restarts=recent,
        now=NOW,
    )
    assert (decision.action, decision.state) == expected
    assert decision.why
    if decision.action is not Action.RESTART:
        assert decision.delay == 0.0


def _decide(settings: SupervisionSettings, failures: int, recent: tuple[float, ...] = ()) -> Any:
    return decide_after_exit(
        settings,
        ExitReason.CRASHED,
        stop_requested=False,
        consecutive_failures=failures,
        recent_restarts=recent,
        now=NOW,
    )


def test_fail_why_names_count_and_window() -> None:
    decision = _decide(BASE, 4, FULL)
    assert decision.action is Action.FAIL
    assert "3 restarts within 60s" in decision.why
    assert "max_restarts 3" in decision.why


def test_restart_why_names_the_reason() -> None:
    decision = decide_after_exit(
        BASE,
        ExitReason.HUNG,
        stop_requested=False,
        consecutive_failures=1,
        recent_restarts=(),
        now=NOW,
    )
    assert decision.why == "hung"


def test_first_failure_after_a_stable_run_restarts_at_once() -> None:
    decision = _decide(BASE, 1, (NOW - 40,))
    assert decision.action is Action.RESTART
    assert decision.delay == 0.0


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 0.0), (2, 0.1), (3, 0.2), (4, 0.4), (5, 0.8), (20, 30.0)]
)
def test_decide_after_exit_backs_off_from_the_second_failure(failures: int, delay: float) -> None:
    assert _decide(BASE, failures).delay == pytest.approx(delay)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (9, 25.6), (10, 30.0), (11, 30.0)],
)
def test_backoff_delay_grows_then_caps(failures: int, delay: float) -> None:
    assert backoff_delay(BASE, failures) == pytest.approx(delay)


@pytest.mark.parametrize("failures", [0, -1, -100])
def test_backoff_delay_is_zero_without_failures(failures: int) -> None:
    assert backoff_delay(BASE, failures) == 0.0


def test_backoff_delay_respects_a_low_cap() -> None:
    settings = replace(BASE, backoff_max=1.0)
    assert [backoff_delay(settings, n) for n in (4, 5, 6, 100)] == pytest.approx(
        [0.8, 1.0, 1.0, 1.0]
    )


@pytest.mark.parametrize("failures", [64, 65, 1000, 10_000])
def test_backoff_delay_does_not_overflow(failures: int) -> None:
    delay = backoff_delay(BASE, failures)
    assert math.isfinite(delay)
    assert delay == BASE.backoff_max
    assert _decide(BASE, failures + 1).delay == BASE.backoff_max


def test_backoff_delay_large_multiplier_does_not_overflow() -> None:
    settings = replace(BASE, backoff_multiplier=100_000.0)
    assert backoff_delay(settings, 100) == settings.backoff_max


@pytest.mark.parametrize(
    ("status", "code", "sig", "text"),
    [
        (0, 0, None, "exit 0"),
        (1 << 8, 1, None, "exit 1"),
        (3 << 8, 3, None, "exit 3"),
        (70 << 8, 70, None, "exit 70"),
        (255 << 8, 255, None, "exit 255"),
        (signal.SIGKILL, None, signal.SIGKILL, "SIGKILL"),
        (signal.SIGTERM, None, signal.SIGTERM, "SIGTERM"),
        (signal.SIGSEGV | 0x80, None, signal.SIGSEGV, "SIGSEGV"),  # with a core dump
        (100, None, 100, "signal 100"),  # not a named signal
    ],
)
def test_exit_status_from_wait_status(
    status: int, code: int | None, sig: int | None, text: str
) -> None:
    exit_status = ExitStatus.from_wait_status(status)
    assert exit_status == ExitStatus(code=code, signal=sig)
    assert exit_status.describe() == text


def test_exit_status_describe_defaults() -> None:
    assert ExitStatus(code=2).describe() == "exit 2"
    assert ExitStatus(signal=signal.SIGINT).describe() == "SIGINT"


HAS_PROCESS = {
    ChildState.STOPPED: False,
    ChildState.WAITING: False,
    ChildState.STARTING: True,
    ChildState.RUNNING: True,
    ChildState.STOPPING: True,
    ChildState.BACKOFF: False,
    ChildState.FAILED: False,
    ChildState.DONE: False,
}


@pytest.mark.parametrize("state", list(ChildState))
def test_child_state_has_process(state: ChildState) -> None:
    assert state.has_process is HAS_PROCESS[state]


@pytest.mark.parametrize("reason", list(ExitReason))
def test_exit_reason_is_failure(reason: ExitReason) -> None:
    assert reason.is_failure is (reason not in (ExitReason.STOPPED, ExitReason.EXITED))
