"""A supervisor that is itself frozen (SIGSTOP, or any long stall of its loop) must not hold its
own silence against the modules: their heartbeats were waiting unread, not missing."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from helpers import wait_until
from project import Project

HEARTBEAT_TIMEOUT = 2.0
STALL = 3.0  # longer than HEARTBEAT_TIMEOUT: the stimulus, not a wait for a condition


@pytest.mark.timeout(60)
def test_a_stalled_supervisor_restarts_no_healthy_module_but_still_a_hung_one(
    project: Project,
) -> None:
    supervision = {"heartbeat_timeout": HEARTBEAT_TIMEOUT, "backoff_initial": 0.01}
    project.configure(
        [
            {"name": "steady", "path": project.probe("idle")},
            {"name": "frozen", "path": project.write_module("frozen.py", _IDLE)},
        ],
        supervision={"heartbeat_interval": 0.1, "stop_timeout": 3, **supervision},
    )
    rows = {row["name"]: row for row in project.up()["modules"]}
    supervisor = psutil.Process(project.status()["supervisor"]["pid"])
    steady, frozen = rows["steady"]["pid"], rows["frozen"]["pid"]

    os.kill(frozen, signal.SIGSTOP)  # hung for real: it stays stopped through the stall
    os.kill(supervisor.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: supervisor.status() == psutil.STATUS_STOPPED, 5, "the stopped state")
        time.sleep(STALL)
    finally:
        os.kill(supervisor.pid, signal.SIGCONT)

    # The hung one is caught within one more heartbeat_timeout; meanwhile the healthy one has
    # had many heartbeat intervals in which to be (wrongly) restarted.
    hung = project.wait_module("frozen", timeout=10, restarts=1, state="running")
    assert hung["history"][0]["reason"] == "hung" and hung["history"][0]["pid"] == frozen
    row = project.module("steady")
    assert (row["pid"], row["restarts"], row["state"]) == (steady, 0, "running"), row
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "steady" not in _kills(app_log), app_log
    stalls = [line for line in app_log.splitlines() if "supervisor stalled for" in line]
    assert len(stalls) == 1, app_log
    seconds = float(stalls[0].split("supervisor stalled for ")[1].split("s")[0])
    assert STALL - HEARTBEAT_TIMEOUT / 2 <= seconds <= STALL + 2, stalls[0]  # a lower bound


def _kills(app_log: str) -> str:
    return "\n".join(line for line in app_log.splitlines() if "killing its process group" in line)


_IDLE = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass
"""
