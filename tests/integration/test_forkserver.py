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

from module_sdk.forkserver import TEMPLATE_COMM
from module_sdk.protocol import VERSION
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
    assert project.forked(pids["forked"])
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
        assert project.forked(pids[name])  # a fork, not a fallback spawn
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


def _long_directory(base: Path) -> Path:
    """A directory whose path is about 3.8 KB long (under PATH_MAX)."""
    path = base
    for index in range(15):
        path = path / (chr(ord("a") + index) * 250)
    path.mkdir(parents=True)
    return path


def test_batches_larger_than_the_socket_takes_in_one_message_are_cut_not_refused(
    template: ForkServer, tmp_path: Path
) -> None:
    # 40 modules in a directory whose path is 3.8 KB: about 150 KiB of requests, more than half
    # the socket's send buffer. Each fork runs the shim, which exits: not started by a supervisor.
    cwd = _long_directory(tmp_path)
    env = {"PATH": os.environ["PATH"]}
    results = template.fork_many([(f"m{i}", env, cwd) for i in range(40)])
    pids = set()
    for result in results:
        assert not isinstance(result, ForkServerError), result
        pid, output = result
        said = output.read()  # to its end: the process has exited
        output.close()
        assert b"started by the orchestrator supervisor" in said, (pid, said)
        pids.add(pid)
    assert len(pids) == 40


def test_a_large_environment_is_forked_like_any_other(template: ForkServer) -> None:
    small = {"PATH": os.environ["PATH"]}
    huge = {**small, "BIG": "x" * 4 * 1024 * 1024}
    results = template.fork_many(
        [("a", small, Path("/")), ("b", huge, Path("/")), ("c", small, Path("/"))]
    )
    results.append(template.fork("d", huge, Path("/")))
    for result in results:
        assert not isinstance(result, ForkServerError), result
        said = result[1].read()
        result[1].close()
        assert b"started by the orchestrator supervisor" in said, said


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable writable mapping of process `pid` holds `needle` now."""
    found = False
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            bounds, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            start, end = (int(value, 16) for value in bounds.split("-"))
            try:
                mem.seek(start)
                found = found or needle in mem.read(end - start)
            except OSError:  # [vvar] and the like
                continue
    return found


def test_the_template_never_holds_a_module_environment(template: ForkServer) -> None:
    # A module run as another user is forked from the template: whatever the template's memory
    # held of other modules' environments (secrets in `env:`), freed or not, it could read.
    secret = os.urandom(16).hex()
    env = {"PATH": os.environ["PATH"], "API_TOKEN": secret}
    for result in [
        template.fork("alone", env, Path("/")),
        *template.fork_many([("a", env, Path("/")), ("b", env, Path("/"))]),
    ]:
        assert not isinstance(result, ForkServerError), result
        assert b"started by the orchestrator supervisor" in result[1].read()  # it read its env
        result[1].close()
    assert template.pid is not None
    try:
        held = _memory_holds(template.pid, secret.encode())
    except PermissionError:
        pytest.skip("cannot read the template's memory here (ptrace restricted)")
    assert not held, "the template's memory holds a module's environment"


def test_the_template_refuses_a_batch_whose_descriptors_do_not_match_it(
    template: ForkServer,
) -> None:
    template.start()
    wait_until(template.became_ready, 30, "the template booted (its first message read)")
    sock = template._sock
    assert sock is not None
    read_end, write_end = os.pipe()
    batch = [{"name": "a", "cwd": "/"}, {"name": "b", "cwd": "/"}]
    socket.send_fds(sock, [msgpack.packb({"batch": batch, "protocol": VERSION})], [write_end])
    os.close(write_end)
    answer = msgpack.unpackb(sock.recv(65536))
    assert answer == {"error": "bad request: 1 descriptors for a batch of 2"}
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
    assert project.forked(broker.pid)  # no interpreter of its own
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


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether `needle` is anywhere in the writable memory of process `pid` (its heap, its
    stack, its anonymous mappings), read through /proc/PID/mem."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            addresses, permissions = line.split()[:2]
            if not permissions.startswith("rw"):
                continue
            start, end = (int(a, 16) for a in addresses.split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:  # a guard page, a mapping gone meanwhile
                continue
    return False


def test_the_template_never_held_the_configs_secrets(project: Project) -> None:
    # The template is a fork of the supervisor made before the supervisor reads its config:
    # had `up -d` read it before its own fork, every module (one running as another user too)
    # would carry the secrets of all the others in its memory.
    secret = "s3cr3t-" + os.urandom(8).hex()
    project.configure([{"name": "idle", "path": project.probe("idle"), "env": {"T": "${TOKEN}"}}])
    (project.config_dir / ".env").write_text(f"TOKEN={secret}\n")
    status = project.up()
    template = next(p for p in project.processes() if p.name() == TEMPLATE_COMM)
    assert template.ppid() == status["supervisor"]["pid"]
    assert template.cmdline() == psutil.Process(template.ppid()).cmdline()  # the fork
    assert _memory_holds(status["supervisor"]["pid"], secret.encode())  # the check sees it
    assert not _memory_holds(template.pid, secret.encode())
