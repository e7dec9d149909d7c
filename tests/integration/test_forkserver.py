"""Modules forked from the warm template start as a fresh interpreter would: same imports, same
environment; and the template itself is replaceable."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import msgpack
import psutil
import pytest
from helpers import wait_until
from project import Project

from orchestrator.forkserver import ForkServer, ForkServerError

REPORTS = """
import os
import sys
import time

import helper_at_root


def initialize(event_bus, config):
    print("helper", helper_at_root.VALUE, "tz", time.tzname[0], "argv", sys.argv[1], flush=True)


def shutdown():
    pass
"""


def _cmdline(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


def test_a_forked_module_sees_what_a_spawned_one_would(project: Project) -> None:
    (project.root / "helper_at_root.py").write_text("VALUE = 'from the project root'\n")
    path = project.write_module("reports.py", REPORTS)
    project.configure(
        [
            {"name": "forked", "path": path, "env": {"TZ": "Asia/Tokyo"}},
            {"name": "spawned", "path": path, "env": {"TZ": "Asia/Tokyo"}, "start_method": "spawn"},
        ]
    )
    status = project.up()
    pids = {m["name"]: m["pid"] for m in status["modules"]}
    for name in ("forked", "spawned"):
        line = wait_until(lambda n=name: "helper" in project.log(n) and project.log(n), 5, name)
        assert "helper from the project root tz JST argv " + name in line, line
    assert "module_sdk.forkserver" in _cmdline(pids["forked"])
    assert "-m module_sdk spawned" in _cmdline(pids["spawned"])


FDS = """
import os
import re


def initialize(event_bus, config):
    kinds = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own fd, already closed
        kinds.append(re.sub(r"\\[\\d+\\]$", "", target))  # pipe:[123] -> pipe:
    print("fds", sorted(kinds), flush=True)


def shutdown():
    pass
"""


def test_a_forked_module_has_the_open_files_of_a_spawned_one(project: Project) -> None:
    # The three forks are asked for in one batch: none may keep another's output pipe open.
    path = project.write_module("fds.py", FDS)
    forked = ["forked-1", "forked-2", "forked-3"]
    project.configure(
        [
            *({"name": name, "path": path} for name in forked),
            {"name": "spawned", "path": path, "start_method": "spawn"},
        ]
    )
    status = project.up()
    seen = {}
    for name in [*forked, "spawned"]:
        line = wait_until(lambda n=name: "fds" in project.log(n) and project.log(n), 5, name)
        seen[name] = line.split("fds", 1)[1].strip()
    for name in forked:
        assert seen[name] == seen["spawned"], name
    assert "socket:" in seen["spawned"] and "/dev/null" in seen["spawned"]  # the bus; stdin
    pids = {m["name"]: m["pid"] for m in status["modules"]}
    for name in forked:
        assert "module_sdk.forkserver" in _cmdline(pids[name])  # a fork, not a fallback spawn
        assert psutil.Process(pids[name]).ppid() == status["supervisor"]["pid"]
    assert "spawning instead" not in (project.root / "logs/app.log").read_text()


@pytest.fixture
def template() -> Iterator[ForkServer]:
    """A fork server of our own (no supervisor): what it forks is orphaned to init."""
    lifeline, keep = os.pipe()
    server = ForkServer(lifeline)
    try:
        yield server
    finally:
        server.close()
        os.close(lifeline)
        os.close(keep)


def test_batches_larger_than_the_socket_takes_in_one_message_are_cut_not_refused(
    template: ForkServer,
) -> None:
    # 40 modules with 12 KiB of environment each: about 480 KiB, twice what the socket's send
    # buffer takes at once. Each fork runs the shim, which exits: not started by a supervisor.
    env = {"PATH": os.environ["PATH"], "BIG": "x" * 12 * 1024}
    results = template.fork_many([(f"m{i}", env, Path("/")) for i in range(40)])
    pids = set()
    for result in results:
        assert not isinstance(result, ForkServerError), result
        pid, output = result
        said = output.read()  # to its end: the process has exited
        output.close()
        assert b"started by the orchestrator supervisor" in said, (pid, said)
        pids.add(pid)
    assert len(pids) == 40


def test_a_fork_request_too_large_for_one_message_is_an_error_for_it_alone(
    template: ForkServer,
) -> None:
    small = {"PATH": os.environ["PATH"]}
    huge = {**small, "BIG": "x" * 4 * 1024 * 1024}
    first, second, third = template.fork_many(
        [("a", small, Path("/")), ("b", huge, Path("/")), ("c", small, Path("/"))]
    )
    assert isinstance(second, ForkServerError) and "too large" in str(second)
    for result in (first, third):  # the template was not restarted for it
        assert not isinstance(result, ForkServerError), result
        result[1].close()


def test_the_template_refuses_a_batch_whose_pipes_do_not_match_it(template: ForkServer) -> None:
    template.start()
    sock = template._sock
    assert sock is not None
    read_end, write_end = os.pipe()
    batch = [{"name": "a", "env": {}, "cwd": "/"}, {"name": "b", "env": {}, "cwd": "/"}]
    socket.send_fds(sock, [msgpack.packb({"batch": batch})], [write_end])
    os.close(write_end)
    sock.settimeout(30)  # the template may still be booting
    answer = msgpack.unpackb(sock.recv(65536))
    assert answer == {"error": "bad request: 1 pipes for a batch of 2"}
    assert os.read(read_end, 1) == b""  # it closed the pipe it was given
    os.close(read_end)


def test_the_broker_is_a_fork_of_the_template_not_shadowed_by_a_project_package(
    project: Project,
) -> None:
    # A package named like ours where `up` runs (and the template starts) must not be the one
    # the broker runs: `python -P -m broker` would not have imported it either.
    (project.root / "broker").mkdir()
    (project.root / "broker" / "__init__.py").write_text("raise SystemExit('shadowed broker')\n")
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    status = project.up()
    broker = psutil.Process(status["bus"]["broker_pid"])
    assert broker.name() == "broker"
    assert "module_sdk.forkserver" in _cmdline(broker.pid)  # no interpreter of its own
    assert broker.ppid() == status["supervisor"]["pid"]  # adopted: the supervisor reaps it
    os.kill(broker.pid, signal.SIGKILL)  # its restart is spawned, as any later one
    wait_until(
        lambda: (
            project.status()["bus"]["broker_pid"] not in (None, broker.pid)
            and project.status()["bus"]["broker_running"]
        ),
        10,
        "the broker restarted",
    )
    assert "shadowed" not in (project.root / "logs/app.log").read_text()
