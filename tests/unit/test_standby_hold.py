"""Standbys wait while a command waits for its answer, and a moment after it has it: making ten
of them right as `up -d` got its answer took it 80 ms of two cores to print its table."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import control_port
from orchestrator.control_port import AFTER_ANSWER, HOLD_AT_MOST, Replies
from orchestrator.manager_reports import ChildReports
from orchestrator.states import ChildState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(control_port.time, "monotonic", clock)
    return clock


class Socket:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


def test_a_waiting_command_holds_the_work_that_can_wait_until_after_its_answer(
    clock: Clock,
) -> None:
    socket = Socket()
    replies = Replies(socket)  # type: ignore[arg-type]
    assert replies.quiet(clock.now)
    answer: dict[str, Any] | None = None
    replies.wait_for(b"cli", lambda: answer)
    assert not replies.quiet(clock.now)
    clock.now += 1.0
    replies.serve()  # no answer yet
    assert not replies.quiet(clock.now) and socket.sent == []
    answer = {"ok": True}
    replies.serve()
    assert len(socket.sent) == 1
    assert not replies.quiet(clock.now + AFTER_ANSWER / 2)  # the command prints and exits
    assert replies.quiet(clock.now + AFTER_ANSWER)


def test_a_command_that_waits_long_holds_nothing_for_long(clock: Clock) -> None:
    replies = Replies(Socket())  # type: ignore[arg-type]
    replies.wait_for(b"cli", lambda: None)  # a restart waiting on a dependency that crash-loops
    assert not replies.quiet(clock.now + HOLD_AT_MOST / 2)
    assert replies.quiet(clock.now + HOLD_AT_MOST)


def _reports(*, held: bool) -> tuple[Any, list[str]]:
    made: list[str] = []
    reports = SimpleNamespace(
        standbys_later=set(),
        standbys_held=held,
        shutting_down=False,
        handovers=SimpleNamespace(busy=lambda name: False),
        standbys=SimpleNamespace(make=lambda child, env, cwd: made.append(child.name)),
        config=SimpleNamespace(config_dir=SimpleNamespace(parent="/project")),
        _starting=lambda: False,
        _launch_env=lambda child: ({}, None),
    )
    return reports, made


def _running(name: str) -> Any:
    supervision = SimpleNamespace(standby=True, start_method="fork", restart="on-failure")
    spec = SimpleNamespace(supervision=supervision, schedule=None, env={})
    return SimpleNamespace(name=name, state=ChildState.RUNNING, spec=spec)


def test_a_module_ready_while_a_command_waits_gets_its_standby_later() -> None:
    reports, made = _reports(held=True)
    ChildReports.keep_standby(reports, _running("worker"))
    assert made == [] and reports.standbys_later == {"worker"}
    reports.standbys_held = False
    ChildReports.keep_standby(reports, _running("worker"))
    assert made == ["worker"]
