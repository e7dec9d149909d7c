"""`schedule:` runs a module at cron times (here with croniter's seconds field, to fire within a
test): a job's process to its exit, or a running module's run(); `run NAME` runs one now."""

from __future__ import annotations

import json
from typing import Any

from helpers import wait_until
from project import Project

from orchestrator import exit_codes

JOB = """
import sys
import time
from pathlib import Path
from typing import Any

def initialize(event_bus: Any, config: dict[str, Any]) -> None:
    with Path(config["file"]).open("a") as out:
        out.write("run\\n")
    event_bus.publish("job.ran", {"file": config["file"]})  # goes out before the exit
    time.sleep(float(config.get("seconds", 0)))
    sys.exit(int(config.get("code", 0)))

def shutdown() -> None:
    pass
"""

RUNNER = """
import os
from pathlib import Path
from typing import Any

FILE = ""

def initialize(event_bus: Any, config: dict[str, Any]) -> None:
    global FILE
    FILE = config["file"]

def run() -> None:
    text = Path(FILE).read_text() if Path(FILE).exists() else ""
    Path(FILE).write_text(text + f"{os.getpid()}\\n")
    if text.count("\\n") == 2:
        raise RuntimeError("third run fails")

def shutdown() -> None:
    pass
"""
EVERY_SECOND = "* * * * * *"
NEVER_SOON = "0 0 1 1 *"  # once a year: only `run NAME` runs it here


def _schedule(project: Project, name: str) -> dict[str, Any]:
    return project.module(name)["schedule"]  # type: ignore[no-any-return]


def test_a_job_runs_at_its_times_and_overlaps_are_skipped(project: Project) -> None:
    ran, slow = project.root / "ran.txt", project.root / "slow.txt"
    job = project.write_module("job.py", JOB)
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["job.*"]},
            },
            {
                "name": "job",
                "path": job,
                "schedule": EVERY_SECOND,
                "timezone": "UTC",
                "restart": "always",  # a job's exit 0 is done all the same: not run in a loop
                "config": {"file": str(ran)},
            },
            {
                "name": "slow",
                "path": job,
                "schedule": EVERY_SECOND,
                "restart": "never",
                "config": {"file": str(slow), "seconds": 2.5},
            },
        ]
    )
    project.up()  # scheduled modules not yet run are fine for `up -d`
    wait_until(lambda: _schedule(project, "job")["runs"] >= 2, 15, "two runs of job")
    row = project.module("job")
    assert row["state"] == "done" and "done" in row["why"]
    schedule = row["schedule"]
    assert schedule["last_result"] == "ok" and schedule["cron"] == EVERY_SECOND
    assert schedule["timezone"] == "UTC" and schedule["next_run"] > schedule["last_run"]
    assert 2 <= ran.read_text().count("run") <= _schedule(project, "job")["runs"] + 1
    assert any(e["source"] == "job" for e in project.recorded())
    # Its events are counted although it exits before its first heartbeat.
    wait_until(lambda: project.module("job")["events_out"] == 1, 10, "job's event counted")
    wait_until(lambda: _schedule(project, "slow")["skipped"] >= 1, 15, "a skipped tick of slow")
    assert "running" in _schedule(project, "slow")
    table = project.cli("status", check=0).stdout
    assert "job: schedule '* * * * * *' (UTC); next run" in table, table


def _runner_project(project: Project, version: int = 1) -> None:
    project.configure(
        [
            {
                "name": "runner",
                "path": project.write_module("runner.py", RUNNER),
                "schedule": NEVER_SOON,
                "config": {"file": str(project.root / "calls.txt"), "version": version},
            },
            {  # not scheduled: it runs once, at `up`, and is done
                "name": "oneshot",
                "path": project.write_module("job.py", JOB),
                "restart": "never",
                "config": {"file": str(project.root / "oneshot.txt")},
            },
            {  # scheduled, not run yet: a reload that changes it does not run it
                "name": "yearly",
                "path": project.write_module("job.py", JOB),
                "schedule": NEVER_SOON,
                "restart": "never",
                "config": {"file": str(project.root / f"yearly{version}.txt")},
            },
        ]
    )


def test_run_calls_run_in_the_running_module(project: Project) -> None:
    calls = project.root / "calls.txt"
    _runner_project(project)
    status = project.up()  # exit 0: a done module is fine
    states = {m["name"]: (m["state"], m["schedule"]) for m in status["modules"]}
    assert states["runner"][0] == "stopped"  # it starts at its first due time
    assert states["oneshot"] == ("done", None)
    again = project.cli("restart", "oneshot", check=0)  # it runs again, and is done again: fine
    assert "oneshot ran again and is done" in again.stdout, again.stdout
    assert project.module("oneshot")["state"] == "done"
    started = project.cli("start", "oneshot", check=0)  # said "started (pid None)" once done
    assert started.stdout.endswith("oneshot ran and is done (exit 0)\n"), started.stdout
    result = project.cli("run", "runner", "--json", check=0)
    assert json.loads(result.stdout)["result"] == "ok"
    row = project.module("runner")
    assert row["state"] == "running" and row["schedule"]["mode"] == "run()"
    project.cli("run", "runner", check=0)
    pids = calls.read_text().split()
    assert pids == [str(row["pid"])] * 2  # both in the one process
    failed = project.cli("run", "runner", check=exit_codes.FAILED)
    assert "RuntimeError: third run fails" in failed.stderr
    schedule = project.module("runner")["schedule"]
    assert schedule["runs"] == 3 and "third run fails" in schedule["last_result"]
    assert project.module("runner")["pid"] == row["pid"]  # a failed run() is not a crash
    assert project.cli("run", "nope").returncode == exit_codes.USAGE
    # A reload that changes both: the running one restarts, the scheduled job that is not
    # running is not started by it; `run` runs it, with the change.
    _runner_project(project, version=2)
    reloaded = json.loads(project.cli("reload", "--json", check=0).stdout)
    assert sorted(reloaded["restart"]) == ["runner", "yearly"], reloaded
    yearly = project.module("yearly")
    assert (yearly["state"], yearly["pid"]) == ("stopped", None), yearly
    assert yearly["schedule"]["runs"] == 0 and yearly["restarts"] == 0, yearly
    assert not (project.root / "yearly1.txt").exists()
    assert not (project.root / "yearly2.txt").exists()
    project.wait_module("runner", state="running", restarts=1)
    assert project.module("runner")["pid"] != row["pid"]
    assert json.loads(project.cli("run", "yearly", "--json", check=0).stdout)["result"] == "ok"
    assert (project.root / "yearly2.txt").read_text() == "run\n"


BROKEN = """
import no_such_module_anywhere  # a job that cannot start: it never loads

def initialize(event_bus, config):
    pass

def shutdown():
    pass
"""


def _app_log(project: Project) -> str:
    path = project.root / "logs" / "app.log"
    return path.read_text() if path.exists() else f"(no {path})"


def test_a_failing_job_runs_at_each_due_time_and_a_held_start_is_not_an_overlap(
    project: Project,
) -> None:
    """A job exiting 1 fed the start breaker, which held it for a minute while status said a
    run was in progress and counted each due time as an overlap; one that cannot load is held
    by the breaker, and its runs end at once as not started, saying why."""
    project.configure(
        [
            {
                "name": "failer",
                "path": project.write_module("job.py", JOB),
                "schedule": EVERY_SECOND,
                "config": {"file": str(project.root / "failer.txt"), "code": 1},
            },
            {
                "name": "broken",
                "path": project.write_module("broken.py", BROKEN),
                "schedule": EVERY_SECOND,
            },
        ],
        error_handling={"circuit_breaker_fail_max": 2, "circuit_breaker_reset_timeout": 60},
    )
    project.up()

    def not_started() -> dict[str, Any] | None:
        schedule = _schedule(project, "broken")
        return schedule if "not started" in (schedule["last_result"] or "") else None

    held = wait_until(not_started, 15, "a run of broken not started", lambda: _app_log(project))
    assert "circuit open after 2 failed starts" in held["last_result"], held
    assert not held["running"], held
    wait_until(lambda: _schedule(project, "broken")["runs"] >= held["runs"] + 2, 10, "2 more")
    later = _schedule(project, "broken")
    assert later["skipped"] == held["skipped"] and "not started" in later["last_result"], later
    # Past circuit_breaker_fail_max runs, each due time runs it again: a failed run.
    wait_until(
        lambda: _schedule(project, "failer")["runs"] >= 4, 10, "4 runs", lambda: _app_log(project)
    )
    failer = _schedule(project, "failer")
    assert failer["last_result"].startswith("crash") and "exit 1" in failer["last_result"], failer
    assert "module_sdk.shim" not in failer["last_result"], failer  # not the shim's own last line
    assert _app_log(project).count("its scheduled runs are not started meanwhile") == 1
