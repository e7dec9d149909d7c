"""A module someone SIGSTOPped stops at once when asked, and its shutdown() runs: the supervisor
follows SIGTERM with SIGCONT, as systemd does, instead of waiting out `stop_timeout` for a SIGKILL."""

from __future__ import annotations

import os
import signal

import psutil
import pytest
from helpers import wait_until
from project import Project

STOP_TIMEOUT = 30  # without SIGCONT, `down` or `restart` would take this long, then SIGKILL
CLI_TIMEOUT = 15  # well within it; a CLI call takes a fraction of a second here


@pytest.mark.parametrize("command", [("down",), ("restart", "frozen")])
def test_a_stopped_module_stops_at_once_and_runs_its_shutdown(
    project: Project, command: tuple[str, ...]
) -> None:
    marker = project.root / "shutdown.marker"
    project.configure(
        [
            {
                "name": "frozen",
                "path": project.probe("marks_shutdown"),
                "config": {"marker": str(marker)},
            }
        ],
        # Heartbeats missed while it is stopped must not make it `hung` (and killed) first.
        supervision={
            "heartbeat_interval": 0.2,
            "heartbeat_timeout": 120,
            "stop_timeout": STOP_TIMEOUT,
        },
    )
    pid = project.up()["modules"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    wait_until(
        lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED, 5, "the module stopped"
    )
    project.cli(*command, timeout=CLI_TIMEOUT, check=0)
    assert marker.read_text() == "shutdown ran\n", project.log("frozen")
