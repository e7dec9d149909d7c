"""A supervisor that is itself frozen (SIGSTOP, or any long stall of its loop) must not hold its
own silence against the modules: their heartbeats and ready messages were waiting unread, not
missing. A module that really hung meanwhile is still caught."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from project import Project

HEARTBEAT_TIMEOUT = 1.5
START_TIMEOUT = 2.5  # for the slow module, which restarts in 2 s (+ a round to the broker)
STALL = 3.0  # longer than both: the stimulus, not a wait for a condition


@pytest.mark.timeout(60)
def test_a_stalled_supervisor_restarts_no_healthy_module_but_still_a_hung_one(
    project: Project,
) -> None:
    pids = project.root / "slow.pids"
    slow_spec = {"start_timeout": START_TIMEOUT, "config": {"pids": str(pids)}}
    project.configure(
        [
            {"name": "steady", "path": project.probe("idle")},
            {"name": "frozen", "path": project.write_module("frozen.py", _IDLE)},
            {"name": "slow", "path": project.write_module("slow.py", _SLOW), **slow_spec},
        ],
        supervision={"heartbeat_interval": 0.1, "heartbeat_timeout": HEARTBEAT_TIMEOUT},
    )
    status = project.up()
    rows = {row["name"]: row for row in status["modules"]}
    supervisor = psutil.Process(status["supervisor"]["pid"])
    steady, frozen, slow = rows["steady"]["pid"], rows["frozen"]["pid"], rows["slow"]["pid"]

    # The slow module crashes and starts again, slowly: its start deadline passes in the stall.
    os.kill(slow, signal.SIGKILL)
    wait_until(lambda: _last_pid(pids) not in (None, slow), 10, "the slow module's restart")
    restarted = _last_pid(pids)
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
    row = project.wait_module("slow", state="running")
    reasons = [exit["reason"] for exit in row["history"]]
    assert (row["pid"], row["restarts"], reasons) == (restarted, 1, ["crash"]), row
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "steady" not in _kills(app_log), app_log
    stalls = [line for line in app_log.splitlines() if "supervisor stalled for" in line]
    assert len(stalls) == 1, app_log
    seconds = float(stalls[0].split("supervisor stalled for ")[1].split("s")[0])
    assert STALL - HEARTBEAT_TIMEOUT / 2 <= seconds <= STALL + 2, stalls[0]  # a lower bound


def _kills(app_log: str) -> str:
    return "\n".join(line for line in app_log.splitlines() if "killing its process group" in line)


def _last_pid(path: Path) -> int | None:
    lines = path.read_text().split() if path.exists() else []
    return int(lines[-1]) if lines else None


_IDLE = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass
"""

# Fast at its first start; each later start takes 2 s (within its start_timeout).
_SLOW = """
import os
import time


def initialize(event_bus, config):
    restart = os.path.exists(config["pids"])
    with open(config["pids"], "a") as pids:
        pids.write(f"{os.getpid()}\\n")
    if restart:
        time.sleep(2.0)


def shutdown():
    pass
"""
