"""A module cannot take itself out of reach of the supervisor's signals: moved into another
process group of the supervisor's session (its own, say), it could be neither stopped nor
restarted (`restart` and `down` waited for ever, the process lived on). Each module process
starts a session of its own, forked or spawned, so no group outside it can be joined."""

from __future__ import annotations

import os

import psutil
from helpers import wait_until
from project import Project

JOINER = """
import os


def initialize(event_bus, config):
    supervisor = int(os.environ["ORCHESTRATOR_SUPERVISOR_PID"])
    try:
        os.setpgid(0, os.getpgid(supervisor))
        outcome = "joined"
    except OSError as exc:
        outcome = exc.strerror
    with open(config["out"], "a") as out:
        out.write(f"{os.getpid()} {outcome}\\n")


def shutdown():
    pass
"""


def test_a_module_cannot_join_the_supervisors_process_group(project: Project) -> None:
    joiner = project.write_module("joiner.py", JOINER)
    methods = {"forked": "fork", "spawned": "spawn"}
    project.configure(
        [
            {
                "name": name,
                "path": joiner,
                "start_method": method,
                "config": {"out": str(project.root / f"{name}.out")},
            }
            for name, method in methods.items()
        ]
    )
    status = project.up()
    pids = {module["name"]: module["pid"] for module in status["modules"]}
    for name, pid in pids.items():
        assert os.getsid(pid) == pid, f"{name} is not in a session of its own"
        outcome = (project.root / f"{name}.out").read_text().split(maxsplit=1)
        assert outcome[0] == str(pid)
        assert outcome[1].strip() != "joined", f"{name} joined the supervisor's process group"
    for name in methods:
        project.cli("restart", name, check=0)
    for name, pid in pids.items():
        wait_until(lambda p=pid: not psutil.pid_exists(p), 10, f"{name}'s old process gone")  # type: ignore[misc]
