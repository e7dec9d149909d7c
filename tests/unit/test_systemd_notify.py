"""sd_notify: what the supervisor tells systemd, read from a real datagram socket."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.systemd import READY_POLL, STATUS_EVERY, SystemdNotify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(0)
    yield sock, path
    sock.close()


def messages(sock: socket.socket) -> list[str]:
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


def test_without_a_notify_socket_nothing_happens() -> None:
    notify = SystemdNotify({})
    assert not notify.enabled and notify.next_deadline() is None
    notify.tick(0.0, False, lambda: pytest.fail("asked for nothing"))  # type: ignore[arg-type,return-value]


def test_ready_status_watchdog_and_stopping(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notify = SystemdNotify(environ)
    assert environ == {}  # taken out: the modules do not inherit them
    assert notify.enabled and notify.watchdog == 1.0
    state: list[object] = [False, "2 modules: 2 starting", False]

    def ask() -> tuple[bool, str, bool]:
        return bool(state[0]), str(state[1]), bool(state[2])

    notify.tick(100.0, False, ask)
    assert messages(sock) == ["WATCHDOG=1\nSTATUS=2 modules: 2 starting"]
    assert notify.next_deadline() == 100.0 + READY_POLL
    state[:2] = [True, "2 modules: 2 running"]
    notify.tick(100.0 + READY_POLL, False, ask)
    assert messages(sock) == ["READY=1\nSTATUS=2 modules: 2 running"]
    notify.tick(100.5, False, ask)
    assert messages(sock) == []  # nothing due, nothing changed
    notify.tick(101.0, False, ask)
    assert messages(sock) == ["WATCHDOG=1"]
    state[1:] = ["stopping; 2 modules: 2 stopping", True]
    notify.tick(101.2, True, ask)
    assert messages(sock) == ["STOPPING=1\nSTATUS=stopping; 2 modules: 2 stopping"]
    assert notify.next_deadline() == 102.0  # the watchdog; STATUS every STATUS_EVERY
    assert STATUS_EVERY >= 1.0


def test_an_abstract_socket_and_a_watchdog_for_another_pid(tmp_path: Path) -> None:
    name = f"orch-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(0)
    try:
        notify = SystemdNotify(
            {"NOTIFY_SOCKET": f"@{name}", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
        )
        assert notify.watchdog is None  # meant for another process
        notify.send("READY=1")
        assert messages(sock) == ["READY=1"]
    finally:
        sock.close()


def test_a_socket_that_is_gone_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notify = SystemdNotify({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with caplog.at_level(logging.WARNING):
        notify.send("READY=1")
        notify.send("STATUS=x")
    assert [r.message for r in caplog.records if "cannot notify" in r.message] != []
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1
