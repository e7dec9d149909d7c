"""`orchestrator test`'s session process and the CLI's wait for it, without processes: when
pytest is interrupted, killed, and how the CLI stops the session (never with SIGKILL)."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

import pytest

from orchestrator.cli import test as cli_test
from orchestrator.testrun import session

PID = 4242


class Run:
    """A pytest that ends after `reaped_after` selects, and the signals it was sent; `asks`:
    which stop signals arrive at which select (by its index)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, asks: dict[int, list[int]]) -> None:
        self.now, self.selects, self.sent = 100.0, list[float | None](), list[int]()
        self.asks, self.reaped_after = asks, 1_000
        self.pytest: Any = type("P", (), {"pid": PID, "returncode": None})()
        monkeypatch.setattr(session.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(session, "_signal_group", lambda pgid, sig: self.sent.append(sig))
        monkeypatch.setattr(session, "_reaped", self.reaped)
        monkeypatch.setattr(session.select, "select", self.select)

    @property
    def read_fd(self) -> int:
        return -1

    def pending(self) -> list[int]:
        return self.asks.pop(len(self.selects), [])

    def reaped(self) -> list[tuple[int, int]]:
        return [(PID, 0)] if len(self.selects) >= self.reaped_after else []

    def select(self, r: object, w: object, x: object, timeout: float | None) -> Any:
        self.selects.append(timeout)
        self.now += 0.2 if timeout is None else max(timeout, 0.001)
        return [], [], []

    def wait(self) -> tuple[int, bool]:
        return session._wait(self.pytest, self, 0, [])  # type: ignore[arg-type]


def test_a_killed_pytest_not_reaped_yet_is_waited_for_without_a_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In D state it stays unreaped: the loop polled with a zero timeout, a core busy."""
    run = Run(monkeypatch, {0: [signal.SIGTERM]})
    run.reaped_after = 50
    run.wait()
    assert run.sent == [signal.SIGINT, signal.SIGKILL]  # after TEARDOWN, once
    assert run.selects[0] == pytest.approx(session.TEARDOWN)
    assert all(t is not None and t >= session._KILLED_POLL for t in run.selects[1:]), run.selects


def test_the_same_stop_twice_is_one_interruption_a_later_one_kills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl+C reaches the session and the CLI, which passes it on as SIGTERM: that is not the
    second stop that kills pytest before its teardown."""
    run = Run(monkeypatch, {0: [signal.SIGINT], 1: [signal.SIGTERM], 2: [signal.SIGTERM]})
    monkeypatch.setattr(run, "select", lambda r, w, x, t: run_select(run, t))
    run.reaped_after = 3
    run.wait()
    assert run.sent == [signal.SIGINT, signal.SIGKILL], run.selects


def run_select(run: Run, timeout: float | None) -> Any:
    run.selects.append(timeout)
    run.now += 0.1 if len(run.selects) == 1 else 1.0  # SIGTERM 0.1 s after, then 1.1 s after
    return [], [], []


class Session:
    def __init__(self, waits: list[object]) -> None:
        self.pid, self.waits, self.signals = 99, waits, list[int]()

    def wait(self, timeout: float | None = None) -> int:
        outcome = self.waits.pop(0) if self.waits else subprocess.TimeoutExpired("s", 1)
        if isinstance(outcome, BaseException):
            raise outcome
        return 0

    def poll(self) -> int | None:
        return None if self.waits else 0

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def kill(self) -> None:
        raise AssertionError("the session was SIGKILLed: what the tests left goes to init")


def test_the_cli_never_sigkills_its_session_and_waits_longer_than_it_allows_itself() -> None:
    assert cli_test._SESSION_BOUND > session.SESSION_BOUND >= session.TEARDOWN + session.CLEAN_UP
    late = Session([subprocess.TimeoutExpired("s", 1), subprocess.TimeoutExpired("s", 1)])
    cli_test._wait_or_stop(late)  # type: ignore[arg-type]
    assert late.signals == [signal.SIGTERM]


def test_an_interrupt_of_the_cli_alone_is_passed_on_to_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kill -INT <cli>`: the session never heard of it, and ran pytest on until killed."""
    started = Session([KeyboardInterrupt(), 0])
    monkeypatch.setattr(cli_test.subprocess, "Popen", lambda *a, **k: started)
    with pytest.raises(KeyboardInterrupt):
        cli_test._run_session(["x"], cli_test.Path("."), None)
    assert started.signals == [signal.SIGTERM]
