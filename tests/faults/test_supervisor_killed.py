"""A SIGKILLed supervisor leaves no module process behind, at once: whatever the moment of its
modules' start (before the forks asked for together are answered, between the first and the
last of them, with half of the modules running), and even for a module that closed the
supervisor's lifeline and reused its file descriptor."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import wait_until
from project import Project, alive

MODULES = 20
# The orphan grace (1.5 s) and more, on a loaded 2-core machine (6 s was missed now and then
# with the whole suite running). A module process that missed its supervisor's death would
# wait 10 s for a spec before it gave up (it did, when the death came as it set itself up).
GONE_WITHIN = 9.0

MOMENTS: dict[str, Callable[[str], bool]] = {
    "starting": lambda log: f": {MODULES} modules" in log,  # the supervisor's first line
    "first forked": lambda log: "starting (pid" in log,
    "half running": lambda log: log.count(" running (pid") >= MODULES // 2,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_supervisor_killed_while_it_starts_its_modules_leaves_nothing(
    project: Project, moment: str
) -> None:
    project.configure(
        [{"name": f"idle-{i}", "path": project.probe("idle")} for i in range(MODULES)]
    )
    app_log = project.root / "logs" / "app.log"
    supervisor = project.start_foreground()
    reached = MOMENTS[moment]
    wait_until(
        lambda: app_log.exists() and reached(app_log.read_text()),
        30,
        f"the start reached '{moment}'",
        lambda: app_log.read_text() if app_log.exists() else "(no app.log)",
    )
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(10)
    wait_until(
        lambda: project.processes() == [],
        GONE_WITHIN,
        "no process of the project left",
        lambda: _left(project),
    )


CLOSER = """
import os

held = []


def initialize(event_bus, config):
    fd = int(os.environ["ORCHESTRATOR_LIFELINE_FD"])
    os.close(fd)  # as os.closerange(3, ...) in daemonizing code would
    read_end, write_end = os.pipe()  # most likely that number again: a pipe of its own, readable
    os.write(write_end, b"mine")
    held.extend((read_end, write_end))
    print("lifeline", fd, "now", read_end, flush=True)


def shutdown():
    pass
"""


def test_a_module_that_closes_the_lifeline_runs_on_and_still_goes_with_its_supervisor(
    project: Project,
) -> None:
    project.configure([{"name": "closer", "path": project.write_module("closer.py", CLOSER)}])
    status = project.up()
    wait_until(
        lambda: "watching the supervisor's process" in project.log("closer"),
        10,
        "the shim noticed its lifeline gone",
        lambda: project.log("closer"),
    )
    row = project.module("closer")
    assert row["state"] == "running" and row["restarts"] == 0, row
    os.kill(status["supervisor"]["pid"], signal.SIGKILL)
    wait_until(
        lambda: project.processes() == [],
        GONE_WITHIN,
        "the module gone with it",
        lambda: f"{_left(project)}\n{project.log('closer')[-1500:]}",
    )


def _left(project: Project) -> str:
    """What of the project is still running, for a failure's message."""
    left = []
    for proc in project.processes():
        try:
            left.append(f"{proc.pid} {proc.name()} {' '.join(proc.cmdline())[:100]}")
        except Exception as exc:  # gone meanwhile
            left.append(f"{proc.pid}: {exc}")
    return "left: " + ("; ".join(left) or "nothing")


def test_a_supervisor_whose_run_directory_is_removed_stops_rather_than_run_twice(
    project: Project,
) -> None:
    """A tmp cleaner (or logind at logout) removed the run directory: `status` said nothing
    ran, `up` started a second supervisor beside the first, and the two killed each other's
    modules through the cgroups they share. The first one now stops, modules and all."""
    import shutil

    project.configure([{"name": "idle", "path": project.probe("idle")}])
    status = project.up()
    supervisor = status["supervisor"]["pid"]
    shutil.rmtree(project.run_base)
    wait_until(lambda: not alive(supervisor), 15, "the supervisor stopped")
    wait_until(lambda: project.processes() == [], 10, "its modules stopped")
    assert "no command can reach us; stopping" in (project.root / "logs" / "app.log").read_text()
    project.up()  # and the next one starts cleanly
    project.cli("down", check=0)


LEAVER = """
import subprocess


def initialize(event_bus, config):
    sleeper = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    with open(config["pid_file"], "w") as out:
        out.write(str(sleeper.pid))


def shutdown():
    pass
"""


def test_what_a_module_left_in_its_cgroup_is_killed_at_the_next_up(project: Project) -> None:
    """A module process SIGKILLed with its supervisor (the OOM killer's, `kill -9` of both) runs
    no code: neither it nor an undertaker of its (module_sdk/undertaker.py) kills what it
    started. With cgroup v2, the next `up` does, before it starts any module."""
    pid_file = project.root / "sleeper.pid"
    module = project.write_module("leaver.py", LEAVER)
    project.configure([{"name": "leaver", "path": module, "config": {"pid_file": str(pid_file)}}])
    status = project.up()
    shim, supervisor = status["modules"][0]["pid"], status["supervisor"]["pid"]
    if "/orchestrator-" not in Path(f"/proc/{shim}/cgroup").read_text():
        pytest.skip("no writable cgroup v2 here: modules are contained by subreapers only")
    sleeper = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "its pid"))
    os.kill(supervisor, signal.SIGSTOP)  # so that it neither reaps the module nor sweeps after it
    os.kill(shim, signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not alive(shim), GONE_WITHIN, "the module process gone with its supervisor")
    assert alive(sleeper), "nothing was left to sweep"
    project.up()
    wait_until(lambda: not alive(sleeper), 10, "the left-behind process killed at the next up")
    assert "an earlier run left in its cgroup" in (project.root / "logs/app.log").read_text()
