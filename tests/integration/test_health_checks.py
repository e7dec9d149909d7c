"""A module's own health() and `ready: manual`, with a real supervisor, broker and module
processes: failing, raising and hanging checks restart the module as `unhealthy: <message>`; a
healthy one is never restarted; a manual-ready module runs only once it says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import wait_until
from project import Project

HEALTH = """
import time
from pathlib import Path

calls = Path(__file__).with_suffix(".calls")


def initialize(event_bus, config):
    event_bus.ready()  # without `ready: manual`: harmless


def health():
    with calls.open("a") as sink:
        sink.write("x")
    {body}


def shutdown():
    pass
"""

MANUAL_READY = """
import threading
import time
from pathlib import Path


def initialize(event_bus, config):
    go = Path(config["go"])
    event_bus.publish("probe.waiting")  # counted in its heartbeats: it is alive, not yet ready

    def wait_for_go():
        while not go.exists():
            time.sleep(0.01)
        for _ in range(20000):  # many times, from many threads at once: one ready is enough
            event_bus.ready()

    for _ in range(4):
        threading.Thread(target=wait_for_go, daemon=True).start()


def shutdown():
    pass
"""

NEVER_READY = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass
"""

FAST_HEALTH = {"health_interval": 0.2, "health_retries": 3}


def _health_module(project: Project, name: str, body: str) -> dict[str, Any]:
    path = project.write_module(f"{name}.py", HEALTH.replace("{body}", body))
    return {"name": name, "path": path, **FAST_HEALTH}


def _first_exit(project: Project, name: str) -> dict[str, Any]:
    """The first entry of `status NAME --json`'s history, once there is one."""
    last: dict[str, Any] = {}

    def exited() -> dict[str, Any] | None:
        nonlocal last
        last = json.loads(project.cli("status", name, "--json", check=0).stdout)["modules"][0]
        return last["history"][0] if last["history"] else None  # type: ignore[no-any-return]

    return wait_until(exited, 20, f"{name} restarted", lambda: f"{last}\n{project.log(name)}")


def test_failing_raising_and_hanging_checks_restart_and_a_healthy_one_runs_on(
    project: Project,
) -> None:
    recorder = {
        "name": "recorder",
        "path": project.probe("recorder"),
        "config": {"record": str(project.record_file), "patterns": ["module.error"]},
    }
    project.configure(
        [
            recorder,
            _health_module(project, "dbdown", 'return "db down"'),
            _health_module(project, "raises", 'raise RuntimeError("no connection")'),
            _health_module(project, "hangs", "time.sleep(3600)"),
            # Its retries allow for a check that a loaded machine leaves unscheduled past the
            # interval; what it returns is never held against it (see below).
            {**_health_module(project, "healthy", "return True"), "health_retries": 6},
        ]
    )
    first = {row["name"]: row["pid"] for row in project.up()["modules"]}
    expected = {
        "dbdown": "db down",
        "raises": "health() raised RuntimeError: no connection",
        "hangs": "health() did not return within",
    }
    for name, message in expected.items():
        exit_ = _first_exit(project, name)
        # (Its first pid may be gone by the time `up -d` has printed its status.)
        assert exit_["reason"] == "unhealthy" and exit_["pid"] is not None, exit_
        assert exit_["error"].startswith(message), exit_
    row = project.module("dbdown")
    assert row["last_exit"]["reason"] == "unhealthy"
    assert "(unhealthy): db down" in project.cli("status", "dbdown", check=0).stdout
    app_log = (project.root / "logs/app.log").read_text()
    assert f"dbdown (pid {_first_exit(project, 'dbdown')['pid']}): unhealthy: db down; killing" in (
        app_log
    )
    assert "health check failed (3 of 3): db down" in project.log("dbdown")
    announced = wait_until(
        lambda: [e["data"] for e in project.recorded() if e["data"]["name"] == "dbdown"],
        10,
        "module.error of dbdown",
    )
    assert announced[0]["reason"] == "unhealthy" and announced[0]["error"] == "db down"
    # Every check of the healthy one ran (as many as the others' three failures took), and it
    # was never restarted.
    calls = Path(project.root / "modules/healthy.calls")
    assert len(calls.read_text()) >= 3
    healthy = json.loads(project.cli("status", "healthy", "--json", check=0).stdout)["modules"][0]
    assert healthy["restarts"] == 0 and not healthy["history"]
    assert healthy["pid"] == first["healthy"]
    assert healthy["state"] == "running"
    assert "health() returned" not in project.log("healthy")


def test_a_manual_ready_module_runs_once_it_says_so(project: Project) -> None:
    go = project.root / "go"
    project.configure(
        [
            {
                "name": "manual",
                "path": project.write_module("manual.py", MANUAL_READY),
                "ready": "manual",
                "config": {"go": str(go)},
            },
            {
                "name": "never",
                "path": project.write_module("never.py", NEVER_READY),
                "ready": "manual",
                "start_timeout": 1,
                "max_restarts": 1,
            },
        ]
    )
    project.start_foreground()
    # initialize() has returned and its heartbeats reach the supervisor, yet it is starting.
    waiting = project.wait_module("manual", state="starting", events_out=1)
    assert "manual running (pid" not in (project.root / "logs/app.log").read_text()
    go.touch()
    running = project.wait_module("manual", state="running")
    assert running["pid"] == waiting["pid"] and running["restarts"] == 0
    assert "manual running (pid" in (project.root / "logs/app.log").read_text()
    exit_ = _first_exit(project, "never")
    assert exit_["reason"] == "start timeout", exit_
    assert project.module("manual")["state"] == "running"
