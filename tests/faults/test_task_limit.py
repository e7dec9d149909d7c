"""A task limit used up for a while (a pids cgroup's, as TasksMax or RLIMIT_NPROC would be): no
new thread or process anywhere under the supervisor. A module's health check that cannot start
its thread is one failed check (the module runs on, same pid); a module that must be restarted
meanwhile waits, "cannot fork", uncounted however often it tries; and once the limit is lifted
everything runs again by itself. Before, running modules died "load failed" (exit 70) and the
refused forks counted as crashes until the module was `failed` for good. Needs a writable cgroup
v1 pids hierarchy (root)."""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from project import Project

PIDS_V1 = Path("/sys/fs/cgroup/pids")

IDLE = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass


def health():
    return True
"""


def _writable() -> bool:
    if not (PIDS_V1 / "pids.max").exists() and not (PIDS_V1 / "cgroup.procs").exists():
        return False
    probe = PIDS_V1 / f"orch-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


pytestmark = pytest.mark.skipif(not _writable(), reason="no writable cgroup v1 pids hierarchy")


@pytest.fixture
def squeezable(project: Project) -> Iterator[Path]:
    """A pids group that the project's `up` starts the supervisor in (with all it starts); at
    the end the limit is lifted, the project stopped and the group removed."""
    group = PIDS_V1 / f"orch-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        yield group
    finally:
        (group / "pids.max").write_text("max\n")
        project.cleanup()
        wait_until(lambda: not (group / "cgroup.procs").read_text().split(), 30, "an empty group")
        group.rmdir()


def _up_in(project: Project, group: Path) -> None:
    project.command_prefix = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"]
    try:
        project.up()
    finally:
        project.command_prefix = []  # the CLI's own calls stay outside: they need threads


def test_a_task_squeeze_costs_no_module_and_everything_comes_back(
    project: Project, squeezable: Path
) -> None:
    steady = project.write_module("steady.py", IDLE)
    victim = project.write_module("victim.py", IDLE)
    project.configure(
        [
            # Its health() every 50 ms: the squeeze finds it starting a check's thread.
            {"name": "steady", "path": steady, "health_interval": 0.05, "health_retries": 10**6},
            # One restart allowed: a refused fork counted as a crash failed it for good. (No
            # standby: one forked before the squeeze would be its next process, fork or not.)
            {"name": "victim", "path": victim, "max_restarts": 1, "standby": False},
        ],
        logging={"level": "DEBUG", "directory": "logs"},
    )
    _up_in(project, squeezable)
    pid = project.wait_module("steady", state="running")["pid"]
    victim_pid = project.wait_module("victim", state="running")["pid"]
    assert str(pid) in (squeezable / "cgroup.procs").read_text().split()

    (squeezable / "pids.max").write_text("1\n")  # below what is in use: no new task at all
    wait_until(
        lambda: "health() could not run" in project.log("steady"),
        15,
        "steady's health check to find no thread",
        lambda: project.log("steady"),
    )
    os.kill(victim_pid, signal.SIGKILL)  # its restart needs a new process
    row = project.wait_module("victim", state="waiting")
    assert row["why"] == "cannot fork: Resource temporarily unavailable; retrying", row

    def refusals() -> int:
        counts = re.findall(r"victim: still cannot fork \((\d+) in a row\)", project.log("app"))
        return max(map(int, counts), default=1)

    wait_until(lambda: refusals() >= 4, 30, "several refused tries", lambda: project.log("app"))
    row = project.module("victim")
    assert row["state"] == "waiting", row  # not failed: max_restarts 1 is not used up
    assert project.module("steady")["pid"] == pid

    (squeezable / "pids.max").write_text("max\n")  # the limit is lifted
    row = project.wait_module("victim", timeout=30, state="running")
    assert row["pid"] != victim_pid
    assert project.wait_module("steady", state="running")["pid"] == pid  # never restarted
    assert "load failed" not in project.log("steady")
