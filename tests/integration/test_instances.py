"""`instances: N` runs N processes of one module, each supervised on its own; `scale` changes N."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
from typing import Any

from helpers import wait_until
from project import Project, describe

from orchestrator import exit_codes

WORKER = """
from typing import Any

def initialize(event_bus: Any, config: dict[str, Any]) -> None:
    event_bus.publish("worker.up", {"pid": __import__("os").getpid()})

def shutdown() -> None:
    pass
"""


def _rows(project: Project, name: str) -> dict[str, dict[str, Any]]:
    data = json.loads(project.cli("status", name, "--json", check=0).stdout)
    return {row["name"]: row for row in data["modules"]}


def _running(project: Project, name: str, count: int) -> dict[str, dict[str, Any]]:
    def ready() -> dict[str, dict[str, Any]] | None:
        rows = _rows(project, name)
        ok = len(rows) == count and all(r["state"] == "running" for r in rows.values())
        return rows if ok else None

    return wait_until(ready, 20, f"{count} running instances of {name}")


def test_instances_run_restart_and_scale_each_on_their_own(project: Project) -> None:
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["worker.*"]},
            },
            {
                "name": "worker",
                "path": project.write_module("worker.py", WORKER),
                "instances": 3,
                "depends_on": ["recorder"],
            },
            {"name": "user", "path": project.probe("idle"), "depends_on": ["worker"]},
        ]
    )
    status = project.up()
    rows = {row["name"]: row for row in status["modules"]}
    names = ["worker#1", "worker#2", "worker#3"]
    assert [n for n in rows if n.startswith("worker")] == names
    assert all(rows[n]["instance_of"] == "worker" and rows[n]["state"] == "running" for n in names)
    pids = {n: rows[n]["pid"] for n in names}
    assert len(set(pids.values())) == 3
    assert rows["user"]["state"] == "running"  # it waited for all three
    assert (project.root / "logs" / "worker#2.log").exists()
    sources = wait_until(
        lambda: len(got := {e["source"] for e in project.recorded()}) == 3 and got, 10, "3 sources"
    )
    assert sources == set(names)  # each instance publishes under its own name
    assert list(_rows(project, "worker")) == names  # `status NAME`: every instance
    table = project.cli("status", "worker", check=0).stdout
    assert table.count("worker#2.log") == 1 and table.count("supervision:") == 3
    refused = project.cli("restart", "worker", "--graceful", check=exit_codes.USAGE).stderr
    assert "takes one instance" in refused and "reload" not in refused, refused  # it has it

    # One killed: only it restarts.
    os.kill(pids["worker#2"], signal.SIGKILL)
    row = project.wait_module("worker#2", state="running", restarts=1)
    assert row["pid"] != pids["worker#2"]
    pids["worker#2"] = row["pid"]
    now = _rows(project, "worker")
    assert {n: now[n]["pid"] for n in names} == pids

    # Scale up and down: the others keep their processes.
    result = project.cli("scale", "worker", "5", check=0)
    assert "worker#5" in result.stdout
    rows = _running(project, "worker", 5)
    assert {n: rows[n]["pid"] for n in names} == pids
    project.cli("scale", "worker", "2", check=0)
    rows = _rows(project, "worker")
    assert list(rows) == ["worker#1", "worker#2"]
    assert {n: rows[n]["pid"] for n in rows} == {n: pids[n] for n in rows}

    # restart NAME#k: that one; restart NAME: each in turn.
    project.cli("restart", "worker#1", check=0)
    rows = _rows(project, "worker")
    assert rows["worker#1"]["pid"] != pids["worker#1"]
    assert rows["worker#2"]["pid"] == pids["worker#2"]
    before = {n: r["pid"] for n, r in rows.items()}
    graceful = project.cli("restart", "worker", "--graceful")  # one instance at a time, or none
    assert graceful.returncode == exit_codes.USAGE and "worker#K" in graceful.stderr, graceful
    project.cli("stop", "worker#2", check=0)  # held: the module's restart starts it again
    restarted = project.cli("restart", "worker", check=0).stdout
    assert restarted.startswith("worker restarted: worker#1 (pid "), restarted
    after = {n: r["pid"] for n, r in _running(project, "worker", 2).items()}
    assert all(after[n] != before[n] for n in after)

    # A reload goes back to the file's count.
    project.cli("reload", check=0)
    _running(project, "worker", 3)
    assert project.cli("scale", "user", "2").returncode == exit_codes.USAGE
    assert project.cli("scale", "nope", "2").returncode == exit_codes.USAGE


def test_an_instance_beyond_the_process_limit_waits(project: Project) -> None:
    project.configure(
        [{"name": "worker", "path": project.probe("idle"), "instances": 2}],
        resources={"max_processes": 2},
    )
    project.up()
    result = project.cli("scale", "worker", "3", check=exit_codes.FAILED)
    assert "worker#3 is waiting: process limit reached" in result.stderr
    rows = _rows(project, "worker")
    assert rows["worker#3"]["state"] == "waiting" and rows["worker#3"]["pid"] is None
    project.cli("scale", "worker", "1", check=0)  # a slot frees: the waiting one goes
    assert list(_rows(project, "worker")) == ["worker#1"]


SLOW_STOP = """
import time
from typing import Any

def initialize(event_bus: Any, config: dict[str, Any]) -> None:
    pass

def shutdown() -> None:
    time.sleep(4)  # long enough for a CLI call to see it stopping
"""


def test_a_scale_up_during_a_scale_down_revives_the_stopping_instances(project: Project) -> None:
    path = project.write_module("slow.py", SLOW_STOP)
    project.configure([{"name": "slow", "path": path, "instances": 3, "stop_timeout": 10}])
    project.up()
    first = _rows(project, "slow")["slow#1"]["pid"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        down = pool.submit(project.cli, "scale", "slow", "1")
        wait_until(
            lambda: _rows(project, "slow").get("slow#3", {}).get("state") == "stopping",
            10,
            "slow#3 stopping",
        )
        project.cli("scale", "slow", "3", check=0)
        assert down.result(timeout=30).returncode == 0, describe(down.result())
    rows = _running(project, "slow", 3)
    assert rows["slow#1"]["pid"] == first

    # A restart of all while a scale down removes those not yet restarted: only #1 is.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        restart = pool.submit(project.cli, "restart", "slow", "--json")
        wait_until(
            lambda: _rows(project, "slow")["slow#1"]["state"] == "stopping", 10, "slow#1 stopping"
        )
        project.cli("scale", "slow", "1", check=0)
        result = restart.result(timeout=60)
    assert result.returncode == 0, describe(result)
    (row,) = _running(project, "slow", 1).values()
    assert row["name"] == "slow#1" and row["pid"] != first
