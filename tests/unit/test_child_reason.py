"""Why a module is not running, in the one line `status` and `up -d` show: a table of states and
last exits, without processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.child import LastExit, ManagedChild
from orchestrator.config import LoggingSection, ModuleSpec, Redactor
from orchestrator.output import ModuleLog
from orchestrator.states import ChildState, ExitReason, ExitStatus

NOW = 1000.0
SYNTAX = "importing m.py raised SyntaxError: '(' was never closed (m.py, line 3)"


def _child(tmp_path: Path, state: ChildState, **fields: object) -> ManagedChild:
    spec = ModuleSpec(name="m", path=tmp_path / "m.py")
    log = ModuleLog("m", LoggingSection(directory=tmp_path), Redactor(()), echo=False)
    child = ManagedChild(spec, log, state=state)
    for key, value in fields.items():
        setattr(child, key, value)
    return child


def _exit(reason: ExitReason, code: int = 1, error: str = "") -> LastExit:
    status = ExitStatus(signal=-code) if code < 0 else ExitStatus(code=code)
    return LastExit(status, reason, at=0.0, error=error)


CASES = [
    # (state, fields, expected)
    (ChildState.RUNNING, {"last_exit": _exit(ExitReason.CRASHED)}, ""),
    (ChildState.WAITING, {"why": "waiting for db to run (depends_on)"}, "waiting for db"),
    (
        ChildState.BACKOFF,
        {"last_exit": _exit(ExitReason.LOAD_FAILED, 70, SYNTAX), "deadline": NOW + 2.5},
        f"load failed: {SYNTAX}; retry in 2.5s (backoff)",
    ),
    (
        ChildState.BACKOFF,
        {"last_exit": _exit(ExitReason.CRASHED), "deadline": NOW + 1, "why": "circuit open (5)"},
        "crash (exit 1); retry in 1.0s (circuit open (5))",
    ),
    (
        ChildState.STARTING,
        {"last_exit": _exit(ExitReason.INIT_FAILED, 71, "initialize() raised ValueError: x")},
        "starting, not ready yet",  # no failure since the last start: nothing to blame
    ),
    (
        ChildState.STARTING,
        {
            "last_exit": _exit(ExitReason.INIT_FAILED, 71, "initialize() raised ValueError: x"),
            "consecutive_failures": 2,
        },
        "initialize() raised ValueError: x; starting again (attempt 3)",
    ),
    (
        ChildState.FAILED,
        {"last_exit": _exit(ExitReason.HUNG, -9), "why": "3 restarts within 60s"},
        "hung (SIGKILL); gave up after 3 restarts within 60s: `orchestrator restart m` retries",
    ),
    (ChildState.STOPPED, {"last_exit": _exit(ExitReason.STOPPED, 0)}, ""),
    (  # a scheduled run's start refused by the open breaker: not "not restarted (...)"
        ChildState.STOPPED,
        {
            "last_exit": _exit(ExitReason.LOAD_FAILED, 70, SYNTAX),
            "why": "circuit open after 5 failed starts (circuit_breaker_fail_max): no start for 3s",
        },
        f"load failed: {SYNTAX}; circuit open after 5 failed starts (circuit_breaker_fail_max)",
    ),
]


@pytest.mark.parametrize(("state", "fields", "expected"), CASES)
def test_the_reason_names_the_cause_and_what_happens_next(
    tmp_path: Path, state: ChildState, fields: dict[str, object], expected: str
) -> None:
    reason = _child(tmp_path, state, **fields).reason(NOW)
    assert reason.startswith(expected) if expected else reason == "", reason
    assert "\n" not in reason
