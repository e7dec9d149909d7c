"""A module's own health(): what its results mean, how messages are bounded, and the probe that
calls it off the main path and counts failures in a row (without processes, on a given clock)."""

from __future__ import annotations

import threading
from types import ModuleType

import pytest
from helpers import wait_until

from module_sdk.health import HealthProbe, bounded_message, check_once, verdict
from module_sdk.protocol import MESSAGE_LIMIT
from module_sdk.testing import InProcessBus, check_health


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (True, None),
        (None, None),
        (False, "health() returned False"),
        ("db down", "db down"),
        ("", "health() returned an empty message"),
        ("  \n ", "health() returned an empty message"),
        (1, "health() returned 1 (expected True, None, False or a message)"),
        ({"ok": True}, "health() returned {'ok': True} (expected True, None, False or a message)"),
    ],
)
def test_what_a_result_means(result: object, expected: str | None) -> None:
    assert verdict(result) == expected


def test_messages_are_one_bounded_printable_line() -> None:
    assert bounded_message("db\ndown\x1b[31m\x00!") == "db down [31m !"
    long = bounded_message("x" * 1_000_000)
    assert len(long) == MESSAGE_LIMIT and long.endswith("…")
    assert bounded_message("é" * 10, 5) == "éééé…"
    bidi = verdict("\u202e" + "y" * 600)  # a bidi override is not printable
    assert bidi is not None and bidi.startswith("yyy") and len(bidi) == MESSAGE_LIMIT


def test_a_check_that_raises_is_unhealthy_with_the_exception() -> None:
    def check() -> bool:
        raise RuntimeError("no\nconnection")

    assert check_once(check) == "health() raised RuntimeError: no connection"


class _Check:
    """A health() whose answers the test sets; `gate` holds it (a hang) until set."""

    def __init__(self, answer: object = True) -> None:
        self.answer = answer
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self) -> object:
        self.calls += 1
        self.gate.wait()
        return self.answer


def _finished(probe: HealthProbe) -> None:
    wait_until(lambda: not probe.busy, 5, "the check to return")


def test_restart_is_asked_only_after_retries_failures_in_a_row() -> None:
    check = _Check("db down")
    probe = HealthProbe(check, interval=10.0, retries=3)
    probe.start(0.0)
    said = []
    for now in (10.0, 20.0, 30.0):
        _finished(probe)
        said.append(probe.tick(now))
    assert said == [None, None, "db down"] and probe.failures == 3
    assert probe.next_due == 40.0


def test_a_healthy_answer_resets_the_count() -> None:
    check = _Check("db down")
    probe = HealthProbe(check, interval=1.0, retries=3)
    probe.start(0.0)
    _finished(probe)
    assert probe.tick(1.0) is None and probe.failures == 1
    _finished(probe)  # the check started at 1.0 has failed too
    check.answer = True
    assert probe.tick(2.0) is None and probe.failures == 2
    _finished(probe)
    assert probe.tick(3.0) is None and probe.failures == 0
    check.answer = None
    _finished(probe)
    assert probe.tick(4.0) is None and probe.failures == 0


def test_a_hanging_check_fails_each_interval_and_is_never_doubled() -> None:
    check = _Check(True)
    check.gate.clear()
    probe = HealthProbe(check, interval=2.0, retries=3)
    probe.start(0.0)
    assert probe.tick(2.0) is None
    assert probe.tick(4.0) is None
    assert probe.tick(6.0) == "health() did not return within 6s"
    assert check.calls == 1  # still the first call: no second one piles up
    check.gate.set()
    _finished(probe)
    assert probe.tick(8.0) is None and probe.failures == 3  # what it returned late is no news
    _finished(probe)
    assert probe.tick(10.0) is None and probe.failures == 0  # the next one, in time, is


def test_a_check_always_slower_than_its_interval_keeps_failing() -> None:
    # It ran past each interval (a failure), then returned True: that late True reset the count,
    # so the module was "healthy again" every other interval and never restarted.
    check = _Check(True)
    check.gate.clear()
    probe = HealthProbe(check, interval=1.0, retries=3)
    probe.start(0.0)
    said = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0):
        if now in (2.0, 4.0):  # it returned late; the next one starts, as slow
            check.gate.set()
            _finished(probe)
            check.gate.clear()
        said.append(probe.tick(now))
    assert said == [None, None, None, None, "health() did not return within 1s"], said
    assert probe.failures == 3
    check.gate.set()


def test_the_in_process_bus_and_check_health_for_module_tests() -> None:
    bus = InProcessBus()
    assert not bus.is_ready.is_set()
    threading.Thread(target=bus.ready).start()
    assert bus.is_ready.wait(5)
    module = ModuleType("probe")
    assert check_health(module) is None  # no health(): healthy
    module.health = lambda: "cache cold"  # type: ignore[attr-defined]
    assert check_health(module) == "cache cold"
    module.health = lambda: 1 / 0  # type: ignore[attr-defined]
    assert check_health(module) == "health() raised ZeroDivisionError: division by zero"


def test_a_check_whose_thread_cannot_start_is_one_failure_not_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under a pids limit (a cgroup's, TasksMax, RLIMIT_NPROC) Thread.start() raises RuntimeError;
    # it went straight out of the shim's loop, and a healthy module died "load failed" (exit 70).
    check = _Check(True)
    probe = HealthProbe(check, interval=1.0, retries=3)
    real_start = threading.Thread.start
    refused = [0]

    def no_task(thread: threading.Thread) -> None:
        if thread.name == "module-sdk-health" and refused[0] < 2:
            refused[0] += 1
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", no_task)
    probe.start(0.0)  # could not start: no exception here
    assert not probe.busy and check.calls == 0
    assert probe.tick(1.0) is None and probe.failures == 1  # that check failed; tries again
    assert probe.tick(2.0) is None and probe.failures == 2
    _finished(probe)  # the limit is gone: the check started at 2.0 ran
    assert check.calls == 1
    assert probe.tick(3.0) is None and probe.failures == 0  # healthy again


def test_a_check_that_never_gets_a_thread_fails_after_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_task(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_task)
    probe = HealthProbe(_Check(True), interval=1.0, retries=2)
    probe.start(0.0)
    assert probe.tick(1.0) is None
    assert probe.tick(2.0) == "health() could not run: can't start new thread"
