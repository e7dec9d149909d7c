"""With cgroup v2 writable, a module's whole tree goes with it: even a daemon that left its
session and cleared its environment, and even when the supervisor itself is SIGKILLed."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import wait_until
from project import Project, alive, cgroups_writable

pytestmark = pytest.mark.skipif(
    not cgroups_writable(), reason="cgroup v2 is not mounted or not writable here"
)

HIDES_A_DAEMON = """
import subprocess
import sys


def initialize(event_bus, config):
    daemon = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        start_new_session=True,
        env={},  # no trace of orchestrator in its environment
    )
    with open(config["pid_file"], "a") as sink:
        sink.write(f"{daemon.pid}\\n")


def shutdown():
    pass
"""


def _setup(project: Project) -> os.PathLike[str]:
    pid_file = project.root / "daemon.pids"
    path = project.write_module("hider.py", HIDES_A_DAEMON)
    project.configure([{"name": "hider", "path": path, "config": {"pid_file": str(pid_file)}}])
    return pid_file


def _daemons(pid_file: os.PathLike[str]) -> list[int]:
    with open(pid_file) as source:
        return [int(pid) for pid in source.read().split()]


def test_a_hidden_daemon_dies_with_its_module_and_the_cgroups_go_at_down(
    project: Project,
) -> None:
    pid_file = _setup(project)
    project.up()
    first = _daemons(pid_file)[0]
    assert "containment: cgroup v2" in (project.root / "logs/app.log").read_text()
    project.cli("restart", "hider", check=0)
    wait_until(lambda: not alive(first), 5, "the first daemon killed with its module")
    second = wait_until(lambda: _daemons(pid_file)[1:], 5, "a second daemon")[0]
    project.cli("down", check=0)
    assert not alive(second)


def test_a_hidden_daemon_dies_when_the_supervisor_is_killed(project: Project) -> None:
    pid_file = _setup(project)
    status = project.up()
    daemon = _daemons(pid_file)[0]
    os.kill(status["supervisor"]["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(daemon), 5, "the daemon to go with the module")
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")
