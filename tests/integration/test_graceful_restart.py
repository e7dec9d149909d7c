"""`restart NAME --graceful` with real processes: a module that publishes all the time is never
absent, and a new process that cannot start leaves the old one running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from project import Project, alive, describe, projects

from orchestrator import exit_codes

# Publishes `tick.beat` with its pid every 5 ms; once synchronously in initialize() (so before it
# is ready) and once in shutdown() (so after it was told to stop). Refuses to start while the
# file `fail_if` exists; initialize() does not return while the file `hold` exists.
TICKER = """
import os
import threading
import time

_stop = threading.Event()
_bus = None


def initialize(event_bus, config):
    global _bus
    if os.path.exists(config["fail_if"]):
        raise RuntimeError("refusing to start: " + config["fail_if"] + " exists")
    deadline = time.monotonic() + 60
    while os.path.exists(config["hold"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    _bus = event_bus
    _stop.clear()
    event_bus.publish("tick.hello", {"pid": os.getpid()})

    def tick():
        while not _stop.wait(0.005):
            event_bus.publish("tick.beat", {"pid": os.getpid()})

    threading.Thread(target=tick, daemon=True).start()


def shutdown():
    _stop.set()
    _bus.publish("tick.bye", {"pid": os.getpid()})
"""


@pytest.fixture(scope="module")
def ticking() -> Iterator[Project]:
    """A recorder of `tick.*`, a ticker that depends on it (so nothing it says is missed), and a
    module that depends on the ticker."""
    for project in projects():
        project.configure(
            [
                {
                    "name": "recorder",
                    "path": project.probe("recorder"),
                    "config": {"record": str(project.record_file), "patterns": ["tick.*"]},
                },
                {
                    "name": "ticker",
                    "path": project.write_module("ticker.py", TICKER),
                    "depends_on": ["recorder"],
                    "config": {
                        "fail_if": str(project.root / "refuse"),
                        "hold": str(project.root / "hold"),
                    },
                },
                {"name": "follower", "path": project.probe("idle"), "depends_on": ["ticker"]},
            ]
        )
        project.up()
        yield project


def _ticks(project: Project) -> list[tuple[str, Any]]:
    return [(e["type"], e["data"]["pid"]) for e in project.recorded() if e["source"] == "ticker"]


def test_a_graceful_restart_leaves_no_gap(ticking: Project) -> None:
    old = ticking.module("ticker")["pid"]
    follower = ticking.module("follower")["pid"]
    wait_until(lambda: ("tick.beat", old) in _ticks(ticking), what="the ticker's beats")
    result = ticking.cli("restart", "ticker", "--graceful", check=0)
    assert "ticker restarted gracefully (pid " in result.stdout, describe(result)
    assert f"was {old})" in result.stdout
    row = ticking.module("ticker")
    new = row["pid"]
    assert (row["state"], row["restarts"]) == ("running", 1) and new != old
    assert not alive(old)
    assert ticking.module("follower")["pid"] == follower  # its dependent did not follow
    wait_until(lambda: ("tick.bye", old) in _ticks(ticking), what="the old process's bye")
    ticks = _ticks(ticking)
    first_new = ticks.index(("tick.hello", new))
    last_old = ticks.index(("tick.bye", old))
    # The new process was heard from before the old one stopped: both ran for a moment.
    assert first_new < last_old, ticks[first_new - 3 : last_old + 3]
    assert ("tick.beat", new) in ticks[first_new:] or wait_until(
        lambda: ("tick.beat", new) in _ticks(ticking), what="the new process's beats"
    )


def test_a_new_process_that_cannot_start_leaves_the_old_one_running(ticking: Project) -> None:
    before = ticking.module("ticker")
    (ticking.root / "refuse").write_text("")
    try:
        result = ticking.cli("restart", "ticker", "--graceful")
    finally:
        (ticking.root / "refuse").unlink()
    assert result.returncode == exit_codes.FAILED, describe(result)
    assert "the new process did not become ready" in result.stderr, describe(result)
    assert "refusing to start" in result.stderr
    assert f"the old one (pid {before['pid']}) keeps running" in result.stderr
    after = ticking.module("ticker")
    assert (after["state"], after["pid"], after["restarts"]) == (
        "running",
        before["pid"],
        before["restarts"],
    )
    assert alive(before["pid"])


def _graceful_in_background(project: Project) -> subprocess.Popen[str]:
    """`restart ticker --graceful`, started now; once the new process is being started."""
    command = [sys.executable, "-m", "orchestrator", "restart", "ticker", "--graceful"]
    proc = subprocess.Popen(
        [*command, "-c", str(project.config_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=project.env,
        cwd=project.root,
    )
    app_log = project.root / "logs" / "app.log"
    marks = app_log.read_text().count("graceful restart: starting a new process")
    wait_until(
        lambda: app_log.read_text().count("graceful restart: starting a new process") > marks,
        timeout=30,
        what="the graceful restart to begin",
    )
    return proc


def test_a_second_graceful_restart_meanwhile_is_refused(ticking: Project) -> None:
    before = ticking.module("ticker")
    (ticking.root / "hold").write_text("")
    try:
        first = _graceful_in_background(ticking)
        second = ticking.cli("restart", "ticker", "--graceful", check=exit_codes.FAILED)
        assert "a graceful restart of ticker is already under way" in second.stderr
        row = ticking.module("ticker")  # the module is there all along, with its old process
        assert (row["state"], row["pid"]) == ("running", before["pid"])
    finally:
        (ticking.root / "hold").unlink()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, f"{out}\n{err}"
    assert f"was {before['pid']})" in out


def test_the_old_process_killed_during_the_handover(ticking: Project) -> None:
    before = ticking.module("ticker")
    (ticking.root / "hold").write_text("")
    try:
        first = _graceful_in_background(ticking)
        stand_in = _stand_in_pid(ticking, before["pid"])
        os.kill(before["pid"], signal.SIGKILL)
        ticking.wait_module("ticker", state="starting")  # its restart policy goes on
        # The new process is stopped at once, not left (unseen, handling events) to its ready.
        wait_until(lambda: not alive(stand_in), 10, "the graceful restart's new process gone")
    finally:
        (ticking.root / "hold").unlink()
    out, err = first.communicate(timeout=60)
    assert first.returncode == exit_codes.FAILED, f"{out}\n{err}"
    assert "the old process stopped running during the graceful restart" in err, err
    assert "keeps running" not in err
    row = ticking.wait_module("ticker", state="running")
    assert row["pid"] != before["pid"]
    log = (ticking.root / "logs" / "app.log").read_text()
    started = [int(pid) for pid in re.findall(r"ticker starting \(pid (\d+)\)", log)]
    assert [pid for pid in started if alive(pid)] == [row["pid"]], log  # the stand-in's is gone


def _stand_in_pid(project: Project, old_pid: int) -> int:
    """The pid of the new process a graceful restart of the ticker (old pid `old_pid`) started."""
    marker = f"ticker: graceful restart: starting a new process beside pid {old_pid}"

    def started() -> int | None:
        log = (project.root / "logs" / "app.log").read_text()
        after = log[log.index(marker) :] if marker in log else ""
        found = re.search(r"ticker starting \(pid (\d+)\)", after)
        return int(found.group(1)) if found else None

    return wait_until(started, 15, "the graceful restart's new process")
