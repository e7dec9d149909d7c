"""A module cannot take itself out of reach of the supervisor's signals: moved into another
process group of the supervisor's session (the supervisor's own, say), it could be neither
stopped nor restarted (`restart` and `down` waited for ever, the process lived on), since every
signal went to a group that no longer existed. Such a module is signalled by its pid."""

from __future__ import annotations

import os

import psutil
from helpers import wait_until
from project import Project

JOINER = """
import os
import signal
import time


def initialize(event_bus, config):
    if config.get("helper") and os.fork() == 0:  # stays in the group its module leaves
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(1)
    supervisor = int(os.environ["ORCHESTRATOR_SUPERVISOR_PID"])
    os.setpgid(0, os.getpgid(supervisor))
    with open(config["out"], "a") as out:
        out.write(f"{os.getpid()} {os.getpgid(0)}\\n")


def shutdown():
    pass
"""


def test_a_module_in_the_supervisors_process_group_is_still_stopped(project: Project) -> None:
    joiner = project.write_module("joiner.py", JOINER)
    # The third leaves a helper in its old group: a signal for that group reaches a process,
    # but not the module.
    methods = {"forked": "fork", "spawned": "spawn", "helped": "spawn"}
    project.configure(
        [
            {
                "name": name,
                "path": joiner,
                "start_method": method,
                "config": {"out": str(project.root / f"{name}.out"), "helper": name == "helped"},
            }
            for name, method in methods.items()
        ]
    )
    status = project.up()
    supervisor = status["supervisor"]["pid"]
    pids = {module["name"]: module["pid"] for module in status["modules"]}
    for name, pid in pids.items():
        moved = (project.root / f"{name}.out").read_text().split()
        assert moved == [str(pid), str(os.getpgid(supervisor))], f"{name} did not move"
        project.cli("restart", name, check=0, timeout=30)
        wait_until(lambda p=pid: not psutil.pid_exists(p), 10, f"{name}'s old process gone")  # type: ignore[misc]
    project.cli("down", check=0, timeout=30)
    assert project.processes() == []
