"""Standbys: a process forked ahead into a module's next cgroup takes over at its restart, runs the
module's code as it is then, is dropped when the module's spec or environment changed, and never
outlives the supervisor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from project import Project, alive, cgroups_writable

from module_sdk.forkserver import TEMPLATE_COMM

WORKER = """
import os


def initialize(event_bus, config):
    print("worker VERSION", os.environ.get("SETTING"), flush=True)


def shutdown():
    pass
"""


def _worker(project: Project, version: str) -> str:
    return project.write_module("worker.py", WORKER.replace("VERSION", version))


def _standby_of(project: Project, name: str) -> int:
    found = wait_until(lambda: project.module(name)["standby_pid"], 10, f"a standby of {name}")
    return int(found)


def _cgroup_v2(pid: int) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next(line[3:] for line in lines if line.startswith("0::"))


def test_a_crashed_module_is_taken_over_by_its_standby_with_its_code_as_it_is_now(
    project: Project,
) -> None:
    project.configure([{"name": "worker", "path": _worker(project, "v1")}])
    first = project.up()["modules"][0]["pid"]
    standby = _standby_of(project, "worker")
    assert psutil.Process(standby).name() == "standby:worker"
    # Connected to the supervisor and the bus ahead: ZeroMQ's I/O thread runs in it already.
    wait_until(lambda: psutil.Process(standby).num_threads() > 1, 5, "its ZeroMQ context")
    contained = cgroups_writable()
    if contained:  # it joined the module's next cgroup before it was needed
        wait_until(lambda: _cgroup_v2(standby).endswith("/worker~spare"), 5, "joined")
    _worker(project, "v2")  # no hot reload: the standby imports it only when it takes over
    os.kill(first, signal.SIGKILL)
    row = project.wait_module("worker", state="running", pid=standby)
    assert row["restarts"] == 1
    assert psutil.Process(standby).name() == "mod:worker"
    wait_until(lambda: "worker v2" in project.log("worker"), 5, "the new code ran")
    # The next standby waits in the cgroup the first process left.
    following = _standby_of(project, "worker")
    assert following != standby
    if contained:
        wait_until(lambda: _cgroup_v2(following).endswith("/worker"), 5, "the other cgroup")
    os.kill(standby, signal.SIGKILL)
    project.wait_module("worker", state="running", pid=following)


def test_a_standby_made_for_another_spec_is_dropped_and_the_restart_forks_anew(
    project: Project,
) -> None:
    path = _worker(project, "v1")
    project.configure([{"name": "worker", "path": path, "env": {"SETTING": "old"}}])
    project.up()
    standby = _standby_of(project, "worker")
    project.configure([{"name": "worker", "path": path, "env": {"SETTING": "new"}}])
    project.cli("reload", check=0)
    wait_until(lambda: "worker v1 new" in project.log("worker"), 10, "restarted with the change")
    row = project.module("worker")
    assert row["state"] == "running" and row["pid"] != standby
    wait_until(lambda: not alive(standby), 5, "the stale standby gone")
    # Stopped until someone starts it: no standby kept meanwhile.
    following = _standby_of(project, "worker")
    project.cli("stop", "worker", check=0)
    assert project.module("worker")["standby_pid"] is None
    wait_until(lambda: not alive(following), 5, "the standby of a stopped module gone")


def test_a_standby_killed_by_someone_is_replaced_and_the_restart_still_works(
    project: Project,
) -> None:
    project.configure([{"name": "worker", "path": _worker(project, "v1")}])
    first = project.up()["modules"][0]["pid"]
    standby = _standby_of(project, "worker")
    os.kill(standby, signal.SIGKILL)
    wait_until(lambda: project.module("worker")["standby_pid"] is None, 5, "its exit noticed")
    said = f"orchestrator.standby: worker: its standby (pid {standby}) left (SIGKILL)"
    lines = (project.root / "logs/app.log").read_text().splitlines()
    assert [line for line in lines if said in line and " WARNING " in line], lines[-5:]
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: project.module("worker")["pid"] not in (None, first, standby), 10, "a new fork"
    )
    project.wait_module("worker", state="running")
    assert _standby_of(project, "worker") not in (first, standby)
    assert "Traceback" not in project.log("worker")


@pytest.mark.parametrize("setting", [{"standby": False}, {"start_method": "spawn"}])
def test_no_standby_where_it_is_off_or_could_not_be_forked(
    project: Project, setting: dict[str, object]
) -> None:
    project.configure([{"name": "worker", "path": _worker(project, "v1"), **setting}])
    project.up()
    project.wait_module("worker", state="running")
    # A standby is made as the module says ready: by the time status answers, it would be there.
    assert project.module("worker")["standby_pid"] is None
    assert not [p for p in project.processes() if p.name().startswith("standby:")]


def test_standbys_go_with_their_supervisor_even_a_killed_one(project: Project) -> None:
    project.configure(
        [
            {"name": "a", "path": _worker(project, "v1")},
            {"name": "b", "path": project.probe("idle")},
        ]
    )
    supervisor = project.up()["supervisor"]["pid"]
    standbys = [_standby_of(project, name) for name in ("a", "b")]
    project.cli("down", check=0)
    assert not [pid for pid in standbys if alive(pid)]
    project.up()
    standbys = [_standby_of(project, name) for name in ("a", "b")]
    supervisor = project.status()["supervisor"]["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not [pid for pid in standbys if alive(pid)], 5, "standbys gone")


def test_a_graceful_restart_keeps_clear_of_the_standby_and_leaves_one_behind(
    project: Project,
) -> None:
    project.configure([{"name": "worker", "path": _worker(project, "v1")}])
    first = project.up()["modules"][0]["pid"]
    standby = _standby_of(project, "worker")
    os.kill(first, signal.SIGKILL)  # now in worker~spare: the stand-in takes worker
    project.wait_module("worker", state="running", pid=standby)
    result = project.cli("restart", "worker", "--graceful", check=0)
    assert "restarted gracefully" in result.stdout
    row = project.wait_module("worker", state="running")
    assert row["pid"] != standby
    following = _standby_of(project, "worker")  # once the old process has left its cgroup
    if cgroups_writable():
        assert _cgroup_v2(following) != _cgroup_v2(row["pid"])


def test_a_module_held_stopped_in_its_backoff_drops_its_standby(project: Project) -> None:
    project.configure(
        [{"name": "worker", "path": _worker(project, "v1"), "backoff_initial": 30}],
        supervision={"stable_after": 60, "heartbeat_interval": 0.2, "heartbeat_timeout": 5},
    )
    first = project.up()["modules"][0]["pid"]
    os.kill(first, signal.SIGKILL)  # the first restart of a crash loop is at once
    second = project.wait_module("worker", state="running", restarts=1)["pid"]
    standby = _standby_of(project, "worker")
    os.kill(second, signal.SIGKILL)  # the second, after backoff_initial
    project.wait_module("worker", state="backoff")
    assert project.module("worker")["standby_pid"] == standby  # kept for the restart to come
    project.cli("stop", "worker", check=0)
    assert project.module("worker")["standby_pid"] is None
    wait_until(lambda: not alive(standby), 5, "the standby of a held module gone")


SLOW_BOOT = """
import time

with open("/proc/self/cmdline", "rb") as cmdline:
    if b"module_sdk.forkserver" in cmdline.read():
        time.sleep(2.5)  # a template slow to boot (a loaded machine, a cold disk)
"""


def _template(project: Project) -> psutil.Process:
    def find() -> psutil.Process | None:
        for proc in project.processes():
            try:
                name = proc.name()
            except psutil.NoSuchProcess:
                continue
            if name == TEMPLATE_COMM:
                return proc
        return None

    return wait_until(find, 15, "the fork server's template")


def test_a_template_slow_to_boot_is_waited_for_at_up_and_never_by_the_loop(
    project: Project,
) -> None:
    # Booting counted against the 2 s reply timeout: at `up` the template was taken for stuck
    # twice and every module spawned; later each restart stalled the loop that long, and no
    # standby was made again once the template had died.
    (project.root / "slowboot").mkdir()
    (project.root / "slowboot" / "sitecustomize.py").write_text(SLOW_BOOT)
    project.env["PYTHONPATH"] = str(project.root / "slowboot")
    project.configure(
        [
            {"name": "plain", "path": project.probe("idle"), "standby": False},
            {"name": "worker", "path": _worker(project, "v1")},
        ]
    )
    pids = {m["name"]: m["pid"] for m in project.up()["modules"]}
    assert all(project.forked(p) for p in pids.values())
    standby = _standby_of(project, "worker")
    _template(project).kill()
    os.kill(pids["plain"], signal.SIGKILL)  # a new template boots: this restart spawns meanwhile
    row = wait_until(
        lambda: (
            (r := project.module("plain"))["state"] == "running" and r["pid"] != pids["plain"] and r
        ),
        15,
        "plain running again",
    )
    assert "-m module_sdk plain" in " ".join(psutil.Process(row["pid"]).cmdline())
    os.kill(pids["worker"], signal.SIGKILL)  # its standby takes over; another is made later
    project.wait_module("worker", state="running", pid=standby)
    again = _standby_of(project, "worker")
    assert again != standby and alive(again)
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "stalled" not in app_log and "failed twice" not in app_log, app_log


def test_a_stopped_standby_is_dropped_not_handed_the_restart(project: Project) -> None:
    project.configure([{"name": "worker", "path": _worker(project, "v1")}])
    first = project.up()["modules"][0]["pid"]
    standby = _standby_of(project, "worker")
    os.kill(standby, signal.SIGSTOP)  # it would take "go" and sit there to the start timeout
    os.kill(first, signal.SIGKILL)
    row = wait_until(
        lambda: (
            (r := project.module("worker"))["state"] == "running"
            and r["pid"] not in (first, standby)
            and r
        ),
        10,
        "the module running again in a new process",
    )
    assert row["restarts"] == 1
    wait_until(lambda: not alive(standby), 5, "the stopped standby killed")
    assert (
        f"standby (pid {standby}) is stopped; dropped"
        in (project.root / "logs/app.log").read_text()
    )


SLOW_START = """
import time


def initialize(event_bus, config):
    time.sleep(60)


def shutdown():
    pass
"""


def test_a_module_slow_to_start_holds_back_the_others_standbys_only_briefly(
    project: Project,
) -> None:
    project.configure(
        [
            {"name": "worker", "path": _worker(project, "v1")},
            {
                "name": "slow",
                "path": project.write_module("slow.py", SLOW_START),
                "start_timeout": 90,
            },
        ]
    )
    project.start_foreground()  # `up -d` would wait for slow
    first = project.wait_module("worker", state="running")["pid"]
    standby = _standby_of(project, "worker")
    os.kill(first, signal.SIGKILL)  # its standby takes over while slow is still starting
    project.wait_module("worker", state="running", pid=standby)
    again = _standby_of(project, "worker")  # not only once slow runs, a minute on
    assert again != standby and project.module("slow")["state"] == "starting"
