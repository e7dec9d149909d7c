"""A module cannot speak for another on the child channel: a message naming another module's
process (its pid) counts only from that process's own routing id, which holds a secret. Before,
a module run as another user (`user: nobody`) could report its neighbour unhealthy, again and
again, until the neighbour failed for good."""

from __future__ import annotations

import os

import pytest
from helpers import wait_until
from project import Project

IMPOSTOR = """
import os, time
import msgpack, zmq

_context = zmq.Context()


def _pid_of(comm):
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if open(f"/proc/{entry}/comm").read().strip() == comm:
                    return int(entry)
            except OSError:
                pass
    return None


def initialize(event_bus, config):
    pid = _pid_of("mod:victim")
    for routing_id in (f"victim:{pid}".encode(), b"anyone"):
        sock = _context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.connect(os.environ["ORCHESTRATOR_CHANNEL"])
        for kind in ("unhealthy", "error"):
            message = {"kind": kind, "pid": pid, "error": "spoofed", "failures": 9, "stage": "x"}
            sock.send(msgpack.packb(message))
    print("spoofed", pid, "as uid", os.getuid(), flush=True)


def shutdown():
    _context.destroy(linger=500)
"""

USERS = [None, "nobody"] if os.geteuid() == 0 else [None]


@pytest.mark.parametrize("user", USERS)
def test_a_module_cannot_report_another_unhealthy(project: Project, user: str | None) -> None:
    path = project.write_module("impostor.py", IMPOSTOR)
    if user is not None:  # the impostor must read its own file
        for directory in (project.root, project.root / "modules"):
            os.chmod(directory, 0o755)
        os.chmod(project.root / "modules" / "impostor.py", 0o644)
    impostor = {"name": "impostor", "path": path, "depends_on": ["victim"]}
    if user is not None:
        impostor["user"] = user
    project.configure([{"name": "victim", "path": project.probe("idle")}, impostor])
    status = project.up()
    victim = next(m for m in status["modules"] if m["name"] == "victim")
    wait_until(lambda: "spoofed" in project.log("impostor"), 10, "the impostor's messages sent")
    app_log = project.root / "logs" / "app.log"
    wait_until(lambda: "claiming to be victim" in app_log.read_text(), 10, "the impostor noticed")
    row = project.module("victim")
    assert row["state"] == "running" and row["pid"] == victim["pid"] and row["restarts"] == 0
    assert "spoofed" not in app_log.read_text()


PRINTS_ENV = """
import os


def initialize(event_bus, config):
    print("channel id in env:", "ORCHESTRATOR_CHANNEL_ID" in os.environ, flush=True)


def shutdown():
    pass
"""


def test_the_secret_is_not_left_for_what_a_module_starts(project: Project) -> None:
    path = project.write_module("prints_env.py", PRINTS_ENV)
    project.configure(
        [
            {"name": "forked", "path": path},
            {"name": "spawned", "path": path, "start_method": "spawn"},
        ]
    )
    project.up()
    for name in ("forked", "spawned"):
        wait_until(lambda n=name: "channel id in env: False" in project.log(n), 10, name)
