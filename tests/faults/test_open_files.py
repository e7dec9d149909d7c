"""A low open-files limit: the supervisor admits only the module processes its limit holds with
room for control clients, says so, and a crowd of `status` calls does not make libzmq abort it
(`Too many open files (src/ipc_listener.cpp)`: EMFILE in its accept, which nothing can catch)."""

from __future__ import annotations

import shutil
import time

import pytest
import zmq
from helpers import wait_until
from project import Project, alive, describe

from orchestrator import control, exit_codes

LIMIT = 96  # holds 3 of 8 module processes (fd_budget); 8 took 73 of 96 before, leaving 23
MODULES = 8
CLIENTS = 40  # connected at once: the headroom (fd_budget.FDS_HEADROOM) holds them


def _crowd(project: Project, clients: int) -> int:
    """`clients` connections to the control socket at once, a `status` request on each; returns
    how many got their reply within 15 s in all."""
    endpoint = next(project.run_base.glob("*/control.sock"))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    poller = zmq.Poller()
    try:
        socks = [context.socket(zmq.DEALER) for _ in range(clients)]
        for sock in socks:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{endpoint}")
            poller.register(sock, zmq.POLLIN)
        for sock in socks:
            sock.send(control.encode({"cmd": "status"}))
        answered = 0
        deadline = time.monotonic() + 15
        while answered < clients and (left := deadline - time.monotonic()) > 0:
            for sock, _ in poller.poll(left * 1000):
                sock.recv()
                poller.unregister(sock)
                answered += 1
        return answered
    finally:
        context.destroy(linger=0)


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux's prlimit")
def test_modules_beyond_the_open_files_limit_wait_and_status_calls_cannot_abort_it(
    project: Project,
) -> None:
    project.configure([{"name": f"m{i}", "path": project.probe("idle")} for i in range(MODULES)])
    project.command_prefix = ["prlimit", f"--nofile={LIMIT}:{LIMIT}"]
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert (
        f"warning: the open-files limit {LIMIT} holds 3 of the {MODULES} module processes;"
        in result.stderr
    ), describe(result)
    assert result.stderr.count("warning: the open-files limit") == 1, describe(result)
    modules = project.status()["modules"]
    assert [m["state"] for m in modules] == ["running"] * 3 + ["waiting"] * 5, modules
    assert modules[-1]["why"].startswith(
        f"process limit reached (3 module processes: all that the open-files limit {LIMIT} holds"
    ), modules[-1]
    wait_until(  # each running module's standby holds descriptors too
        lambda: all(m["standby_pid"] for m in project.status()["modules"] if m["pid"]),
        15,
        "a standby for each running module",
        lambda: project.status()["modules"],
    )
    supervisor = project.status()["supervisor"]["pid"]
    # Connected all at once (as 30 `status` calls on a busy machine are): ZeroMQ accepts each
    # connection as it comes, whatever the loop is doing.
    replies = _crowd(project, CLIENTS)
    last_words = sorted(project.run_base.glob("*/supervisor.out"))
    assert alive(supervisor), [path.read_text()[-500:] for path in last_words]
    assert replies == CLIENTS
    assert project.module("m0")["state"] == "running"
