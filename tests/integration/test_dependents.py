"""Dependents follow their dependencies (`depends_on` with `on_failure`), and `stop`/`start NAME`,
with real processes: the order is read from the supervisor's log, by pid."""

from __future__ import annotations

import os
import signal

import yaml
from project import Project, alive, describe

from orchestrator import exit_codes


def _configure(project: Project, db_config: dict[str, int] | None = None) -> None:
    idle = project.probe("idle")
    project.configure(
        [
            {"name": "db", "path": idle, "config": db_config or {}},
            {"name": "api", "path": idle, "depends_on": ["db"]},
            {"name": "cache", "path": idle, "depends_on": [{"name": "db", "on_failure": "stop"}]},
            {"name": "audit", "path": idle, "depends_on": [{"name": "db", "on_failure": "ignore"}]},
        ]
    )


def _pids(project: Project) -> dict[str, int | None]:
    return {row["name"]: row["pid"] for row in project.status()["modules"]}


def _line(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def test_dependents_follow_a_crashed_dependency_by_their_policy(project: Project) -> None:
    _configure(project)
    project.up()
    before = _pids(project)
    assert all(before.values()), before
    os.kill(before["db"], signal.SIGKILL)
    db = project.wait_module("db", state="running", restarts=1)
    api = project.wait_module("api", state="running", restarts=1)
    assert api["pid"] != before["api"] and not alive(before["api"])  # stopped, then started
    lines = (project.root / "logs/app.log").read_text().splitlines()
    assert _line(lines, "api exited") < _line(lines, f"api starting (pid {api['pid']})")
    assert _line(lines, f"db running (pid {db['pid']}") < _line(
        lines, f"api starting (pid {api['pid']})"
    ), "\n".join(lines)
    cache = project.wait_module("cache", state="stopped")
    assert cache["why"] == "stopped because db stopped running (on_failure: stop)", cache
    assert not alive(before["cache"])
    audit = project.module("audit")
    assert (audit["state"], audit["pid"]) == ("running", before["audit"])  # ignore: untouched
    started = project.cli("start", "cache", check=0)
    assert "cache started (pid" in started.stdout, describe(started)
    assert project.module("cache")["state"] == "running"


def test_stop_and_start_hold_a_module_through_a_reload(project: Project) -> None:
    _configure(project)
    project.up()
    before = _pids(project)
    stopped = project.cli("stop", "db", check=0)
    assert "db stopped (stopped by operator)" in stopped.stdout, describe(stopped)
    rows = {row["name"]: row for row in project.status()["modules"]}
    assert (rows["db"]["state"], rows["db"]["why"]) == ("stopped", "stopped by operator")
    assert rows["api"]["state"] == "waiting", rows["api"]
    assert rows["api"]["why"] == "waiting for db to run (depends_on)"
    assert rows["cache"]["state"] == "stopped" and rows["audit"]["pid"] == before["audit"]
    table = project.cli("status", check=0).stdout
    assert "db: stopped by operator" in table and "api: waiting for db to run" in table, table
    # A reload that changes db's settings does not start it.
    _configure(project, db_config={"version": 2})
    reloaded = project.cli("reload", "--json", check=0)
    assert "db" in yaml.safe_load(reloaded.stdout)["restart"], describe(reloaded)
    rows = {row["name"]: row for row in project.status()["modules"]}
    assert (rows["db"]["state"], rows["db"]["why"]) == ("stopped", "stopped by operator")
    assert rows["api"]["state"] == "waiting", rows["api"]
    # start brings it back, and the dependent that waited for it runs again after it.
    started = project.cli("start", "db", check=0)
    assert "db started (pid" in started.stdout, describe(started)
    api = project.wait_module("api", state="running")
    assert api["pid"] != before["api"]
    again = project.cli("start", "db", check=0)
    assert "db is already running" in again.stdout, describe(again)
    assert project.cli("stop", "nosuch").returncode == exit_codes.USAGE
    project.cli("down", check=0)
    assert project.cli("start", "db").returncode == exit_codes.NOT_RUNNING
