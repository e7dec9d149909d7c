"""Supervision with real processes: restart limits, hung and oversized modules, strays, stop
timeouts, dependencies, the circuit breaker, and what `status NAME` shows."""

from __future__ import annotations

import json
import time
from typing import Any

from helpers import wait_until
from project import FAST_SUPERVISION, Project, alive

from orchestrator import exit_codes

EXITS_AT_ONCE = """
import os


def initialize(event_bus, config):
    os._exit(1)


def shutdown():
    pass
"""

HANGS_IN_A_CALLBACK = """
import threading
import time
from typing import Any

started = threading.Event()


def hang(event):
    started.set()
    time.sleep(3600)


def initialize(event_bus, config):
    event_bus.subscribe("probe.hang", hang)

    def poke():  # our own subscription needs a moment to reach the broker
        while not started.wait(0.05):
            event_bus.publish("probe.hang")

    threading.Thread(target=poke, daemon=True).start()


def shutdown():
    pass
"""

GROWS = """
import threading

hoard = []


def initialize(event_bus, config):
    def grow():
        for _ in range(40):
            hoard.append(b"x" * (10 * 1024 * 1024))  # touched pages: real RSS

    threading.Thread(target=grow, daemon=True).start()


def shutdown():
    pass
"""

SPAWNS_A_DAEMON = """
import subprocess
import sys


def initialize(event_bus, config):
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"], start_new_session=True
    )
    with open(config["pid_file"], "a") as sink:
        sink.write(f"{child.pid}\\n")


def shutdown():
    pass
"""

STUCK_IN_SHUTDOWN = """
import time
from typing import Any


def initialize(event_bus, config):
    pass


def shutdown():
    time.sleep(3600)
"""

SLOW_START = """
import time
from typing import Any


def initialize(event_bus, config):
    time.sleep(float(config.get("delay", 0.5)))


def shutdown():
    pass
"""


def _wait_restarted(project: Project, name: str) -> dict[str, object]:
    """`status NAME --json` once the module has been restarted at least once."""
    last: dict[str, object] = {}

    def restarted() -> dict[str, object] | None:
        nonlocal last
        last = json.loads(project.cli("status", name, "--json", check=0).stdout)["modules"][0]
        return last if last["restarts"] and last["history"] else None  # type: ignore[return-value]

    return wait_until(restarted, 20, f"{name} restarted", lambda: str(last))


def test_a_module_that_exits_at_once_ends_failed_after_max_restarts(project: Project) -> None:
    path = project.write_module("exits.py", EXITS_AT_ONCE)
    project.configure(
        [{"name": "exits", "path": path, "max_restarts": 3, "backoff_initial": 0.01}],
        supervision=FAST_SUPERVISION,
    )
    project.cli("up", "-d", check=exit_codes.FAILED)
    row = project.wait_module("exits", state="failed")
    assert row["restarts"] == 3 and row["pid"] is None and row["next_retry"] is None
    assert "3 restarts within 60s (max_restarts 3)" in row["why"]
    assert row["last_exit"]["code"] == 1 and row["last_exit"]["reason"] == "crash"
    assert "max_restarts 3" in project.cli("status", check=0).stdout
    result = project.cli("restart", "exits", check=exit_codes.FAILED)  # an operator's try
    assert "did not start" in result.stderr


def test_a_module_hung_in_a_callback_is_restarted_as_hung(project: Project) -> None:
    path = project.write_module("hangs.py", HANGS_IN_A_CALLBACK)
    project.configure(
        [{"name": "hangs", "path": path, "heartbeat_interval": 0.1, "heartbeat_timeout": 1}]
    )
    first = project.up()["modules"][0]["pid"]
    # It hangs again after each restart: restarts grow. (Under load, the process `up` saw may
    # already be a restarted one: wait for that one's own exit.)

    def exited() -> dict[str, Any] | None:
        row = json.loads(project.cli("status", "hangs", "--json", check=0).stdout)["modules"][0]
        return next((e for e in row["history"] if e["pid"] == first), None)

    assert wait_until(exited, 20, "the process up saw restarted")["reason"] == "hung"
    assert "hung" in project.log("hangs") or "hung" in (project.root / "logs/app.log").read_text()


def test_a_module_over_its_memory_limit_is_restarted(project: Project) -> None:
    path = project.write_module("grows.py", GROWS)
    project.configure([{"name": "grows", "path": path, "memory_limit_mb": 150}])
    project.up()
    row = _wait_restarted(project, "grows")  # it grows again after each restart: restarts grow
    assert row["history"][0]["reason"] == "memory limit"
    assert "over its memory_limit_mb 150" in (project.root / "logs/app.log").read_text()


def test_stray_processes_of_a_module_do_not_outlive_it(project: Project) -> None:
    pids_file = project.root / "daemon.pids"
    path = project.write_module("spawner.py", SPAWNS_A_DAEMON)
    project.configure([{"name": "spawner", "path": path, "config": {"pid_file": str(pids_file)}}])
    project.up()
    first = int(pids_file.read_text().split()[0])
    assert alive(first)
    project.cli("restart", "spawner", check=0)
    wait_until(lambda: not alive(first), 5, "the first daemon killed by the restart")
    second = int(wait_until(lambda: pids_file.read_text().split()[1:], 5, "a second daemon")[0])
    project.cli("down", check=0)
    assert not alive(second)
    assert project.processes() == []


def test_a_module_stuck_in_shutdown_is_killed_after_stop_timeout(project: Project) -> None:
    path = project.write_module("stuck.py", STUCK_IN_SHUTDOWN)
    project.configure([{"name": "stuck", "path": path, "stop_timeout": 1}])
    project.up()
    began = time.monotonic()
    project.cli("status", check=0)  # what a CLI call costs here, on its own
    overhead = time.monotonic() - began
    began = time.monotonic()
    project.cli("down", check=0)
    elapsed = time.monotonic() - began - overhead
    assert elapsed < 1 + 1, f"down took {elapsed:.2f}s (beyond a CLI call) with stop_timeout 1"
    assert project.processes() == []
    assert "did not stop within its stop timeout" in (project.root / "logs/app.log").read_text()


def test_depends_on_orders_start_and_stop(project: Project) -> None:
    slow = project.write_module("slow.py", SLOW_START)
    project.configure(
        [
            {"name": "web", "path": project.probe("idle"), "depends_on": ["db"]},
            {"name": "db", "path": slow, "config": {"delay": 0.5}},
        ]
    )
    project.up()
    project.cli("down", check=0)
    lines = (project.root / "logs/app.log").read_text().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert first("db running") < first("web starting")
    assert first("web exited") < first("db stopping")


def test_circuit_breaker_pauses_a_module_that_cannot_start(project: Project) -> None:
    path = project.write_module("exits.py", EXITS_AT_ONCE)
    project.configure(
        [
            {
                "name": "exits",
                "path": path,
                "restart": "always",
                "max_restarts": 100,
                "backoff_initial": 0.01,
            }
        ],
        supervision=FAST_SUPERVISION,
        error_handling={"circuit_breaker_fail_max": 2, "circuit_breaker_reset_timeout": 60},
    )
    project.cli("up", "-d", check=exit_codes.FAILED)
    row = project.wait_module("exits", state="backoff", restarts=1)
    assert "circuit open after 2 failed starts" in row["why"]
    assert 30 < row["next_retry"] <= 60
    details = project.cli("status", "exits", check=0).stdout
    assert "circuit:     open" in details


def test_status_name_shows_redacted_config_history_and_log(project: Project) -> None:
    project.env["PROBE_TOKEN"] = "s3cr3t-value-123"
    project.configure(
        [
            {
                "name": "idle",
                "path": project.probe("idle"),
                "config": {"token": "${PROBE_TOKEN}", "plain": "visible"},
            }
        ]
    )
    project.up()
    project.cli("restart", "idle", check=0)
    details = project.cli("status", "idle", check=0).stdout
    assert "s3cr3t-value-123" not in details
    assert '"token": "***"' in details and '"plain": "visible"' in details
    assert "exit 0 (stopped)" in details
    assert "idle module says hi" in details
    data = project.cli("status", "idle", "--json", check=0).stdout
    assert "s3cr3t-value-123" not in data and '"history"' in data


GROWS_IN_INITIALIZE = """
import time


def initialize(event_bus, config):
    hoard = [bytearray(64 * 1024 * 1024) for _ in range(4)]  # 256 MB, touched
    for block in hoard:
        block[::4096] = b"x" * len(block[::4096])
    time.sleep(60)  # never says ready within the test


def shutdown():
    pass
"""


def test_memory_counts_from_initialize_not_from_ready(project: Project) -> None:
    """The limit was checked on heartbeats of a running module only: one that allocated in
    initialize() held 2 GB against a limit of 100 until it said ready (up to start_timeout)."""
    path = project.write_module("hoards.py", GROWS_IN_INITIALIZE)
    module = {"name": "hoards", "path": path, "memory_limit_mb": 100, "start_timeout": 60}
    project.configure([module])
    project.cli("up", "-d", check=None)  # exit 1: it did not start
    row = _wait_restarted(project, "hoards")
    history = row["history"]
    assert isinstance(history, list) and history[0]["reason"] == "memory limit", history
