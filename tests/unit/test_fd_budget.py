"""The open-files budget: how many module processes a limit holds, what `status` and `up` say
when it holds modules back, and the control listener that waits while descriptors run short."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers import wait_until

from orchestrator import fd_budget
from orchestrator.fd_budget import ControlGuard, files_needed, files_short, processes_within
from orchestrator.listeners import rebind
from orchestrator.resources import Limits

MEMORY = Limits(max_processes=33, max_threads=4, available_mb=1, total_mb=1, cpu_count=2)


@pytest.mark.parametrize(
    ("open_files", "modules", "expected"),
    [
        (128, 20, 7),  # the sweep's case: 20 x 6 + 25 of 128 held; 30 `status` then aborted
        (256, 20, 32),
        (1024, 20, 186),
        (64, 20, 1),  # never none: one module runs, and `up` says why the rest wait
        (64, 1, 1),
    ],
)
def test_processes_within_keep_the_supervisors_own_and_the_headroom(
    open_files: int, modules: int, expected: int
) -> None:
    assert processes_within(open_files, modules) == expected
    if expected > 1:
        assert files_needed(expected, modules) <= open_files < files_needed(expected + 1, modules)


def test_the_lower_of_memory_and_open_files_is_the_process_limit() -> None:
    files = Limits(**{**MEMORY.as_dict(), "open_files": 128})
    assert files.process_limit(20) == (7, "open files")
    assert files.as_dict(20)["max_processes"] == 7
    assert files.as_dict(20)["bound_by"] == "open files"
    assert files.reached(20) == (
        "process limit reached (7 module processes: all that the open-files limit 128 holds;"
        " 132 would hold one more)"
    )
    assert files.process_limit(2) == (10, "open files")
    plenty = Limits(**{**MEMORY.as_dict(), "open_files": 1 << 20})
    assert plenty.process_limit(20) == (33, "memory")
    assert plenty.reached(20) == "process limit reached (33 module processes)"
    assert MEMORY.process_limit(20) == (33, "memory")  # no limit known: memory alone


def test_up_warns_only_when_open_files_hold_modules_back() -> None:
    files = Limits(**{**MEMORY.as_dict(), "open_files": 128})
    assert files_short(files.as_dict(20), 20) == (
        "the open-files limit 128 holds 7 of the 20 module processes; the rest wait. Raise it to"
        " 192 or more (`ulimit -n`, systemd's LimitNOFILE=, docker's --ulimit nofile=)"
    )
    assert files_short(files.as_dict(7), 7) is None
    assert files_short(MEMORY.as_dict(40), 40) is None  # memory holds them: said as before
    assert files_short({}, 3) is None  # a supervisor of before


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[zmq.Socket[bytes], str]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.ROUTER)
    endpoint = f"ipc://{tmp_path}/control.sock"
    sock.bind(endpoint)
    yield sock, endpoint
    context.destroy(linger=0)


def test_the_guard_refuses_clients_while_files_run_short_and_takes_them_again(
    listener: tuple[zmq.Socket[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, endpoint = listener
    used = [100]
    monkeypatch.setattr(fd_budget, "open_count", lambda limit: used[0])
    guard = ControlGuard(sock, endpoint, 200, rebind)
    guard.check(0.0)  # 100 free: fine
    assert not guard.refusing and guard.next_deadline() is None
    used[0] = 193  # 7 free: the next client could be the one libzmq aborts on
    guard.check(1.0)
    assert guard.refusing
    assert guard.next_deadline() == pytest.approx(1.0 + fd_budget.GUARD_RECHECK)
    client = sock.context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(endpoint)
    client.send(b"status")  # waits in the client: nobody listens
    assert not sock.poll(300)
    guard.check(1.01)  # not due yet
    assert guard.refusing
    used[0] = 192  # a client left
    guard.check(1.1)
    assert not guard.refusing
    assert os.stat(endpoint.removeprefix("ipc://")).st_mode & 0o777 == 0o600
    wait_until(lambda: sock.poll(0), 5, "the waiting client's request once listening again")
    assert sock.recv_multipart()[1] == b"status"


def test_the_guard_listens_again_after_a_while_whatever_holds_the_files(
    listener: tuple[zmq.Socket[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, endpoint = listener
    monkeypatch.setattr(fd_budget, "open_count", lambda limit: 105)  # the modules': they stay
    guard = ControlGuard(sock, endpoint, 110, rebind)
    guard.check(0.0)
    assert guard.refusing
    guard.check(1.0)
    assert guard.refusing
    guard.check(fd_budget.GUARD_MAX_REFUSAL)  # else `status` and `down` would never get in
    assert not guard.refusing


def test_the_guard_refuses_when_no_descriptor_is_left_to_count_with(
    listener: tuple[zmq.Socket[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counting takes a descriptor: with none left the count failed and the guard did nothing,
    # where the next accept() aborts the supervisor (a review).
    sock, endpoint = listener

    def full(path: str) -> list[str]:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(fd_budget.os, "listdir", full)
    guard = ControlGuard(sock, endpoint, 110, rebind)
    guard.check(0.0)
    assert guard.refusing


def test_the_guard_counts_on_a_timer_while_few_descriptors_are_free(
    listener: tuple[zmq.Socket[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Clients are accepted by ZeroMQ's own thread: a burst is not seen by a count made only
    # when the control socket has a request to read (a review).
    sock, endpoint = listener
    monkeypatch.setattr(fd_budget, "open_count", lambda limit: 150)
    guard = ControlGuard(sock, endpoint, 200, rebind)
    guard.check(0.0)  # 50 free: listening, but counting again soon
    assert not guard.refusing and guard.watching
    assert guard.next_deadline() == pytest.approx(fd_budget.GUARD_RECHECK)


def test_no_limit_no_guard(listener: tuple[zmq.Socket[bytes], str]) -> None:
    sock, endpoint = listener
    guard = ControlGuard(sock, endpoint, None, rebind)
    guard.check(0.0)
    assert not guard.refusing
