"""A module's processes go with it, with or without cgroup v2: a child in a session of its own and
a double-forked daemon that cleared its environment die when their module is restarted, when its
process is SIGKILLed, and when the supervisor is SIGKILLed (even while the module is SIGSTOPped).
Each scenario runs once with cgroups (where cgroup v2 is writable here) and once without: where
they are writable, the supervisor runs in a mount namespace whose cgroup2 mount is read-only, as in
many containers. Each project holds a forked and a spawned module."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from project import Project, cgroups_writable, describe

START_METHODS = {"forked": "fork", "spawned": "spawn"}  # one module of each kind
MODULES = tuple(START_METHODS)


def _cgroup2_mount() -> str | None:
    """Where cgroup v2 is mounted in this mount namespace, or None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if " - cgroup2 " in line:
            return line.split()[4]
    return None


# `sh -c` with the cgroup2 mount point as $0: in a mount namespace of its own, with private
# mounts, remount it read-only (for this process and its descendants only), then run the rest.
HIDE_CGROUPS = 'mount -o remount,bind,ro "$0" && exec "$@"'
WITHOUT_CGROUPS = ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_CGROUPS]


def _can_hide_cgroups(mount: str) -> bool:
    """Whether we may make `mount` read-only for one process tree (root, or CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        return False
    probe = Path(mount, f"orchestrator-probe-{uuid.uuid4().hex[:8]}")
    try:
        result = subprocess.run(
            [*WITHOUT_CGROUPS, mount, "mkdir", str(probe)],
            check=False,
            capture_output=True,
            timeout=10,
        )
    finally:
        if probe.exists():
            probe.rmdir()
    return result.returncode != 0 and b"Read-only file system" in result.stderr


CGROUP2_MOUNT = _cgroup2_mount()
CGROUPS_WRITABLE = cgroups_writable()
# Without writable cgroups here, the supervisor has none anyway; with them, hide them from it.
HIDE = CGROUPS_WRITABLE and CGROUP2_MOUNT is not None and _can_hide_cgroups(CGROUP2_MOUNT)

MODES = [
    pytest.param(
        "cgroups",
        marks=pytest.mark.skipif(not CGROUPS_WRITABLE, reason="cgroup v2 is not writable here"),
    ),
    pytest.param(
        "no-cgroups",
        marks=pytest.mark.skipif(
            CGROUPS_WRITABLE and not HIDE,
            reason="cgroup v2 is writable here and we may not remount it read-only (unshare -m)",
        ),
    ),
]


def _configure(project: Project, path: str | None = None) -> dict[str, Path]:
    """A forked and a spawned module, each running `path` (by default the escaper probe: a
    setsid child and a hidden daemon); the file each writes its pids to, by module name."""
    pid_files = {name: project.root / f"{name}.pids" for name in MODULES}
    path = path or project.probe("escaper")
    project.configure(
        [
            {
                "name": name,
                "path": path,
                "start_method": START_METHODS[name],
                "config": {"pid_file": str(pid_files[name])},
            }
            for name in MODULES
        ]
    )
    return pid_files


def _up(project: Project, mode: str) -> dict[str, int]:
    """Start the project in `mode`; returns the module pids by name."""
    _configure(project)
    return _start(project, mode)


def _start(project: Project, mode: str) -> dict[str, int]:
    """Start the project as configured, in `mode`; returns the module pids by name."""
    command = [sys.executable, "-m", "orchestrator", "up", "-d", "-c", str(project.config_dir)]
    if mode == "no-cgroups" and HIDE:
        assert CGROUP2_MOUNT is not None
        command = [*WITHOUT_CGROUPS, CGROUP2_MOUNT, *command]
    result = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        env=project.env,
        cwd=project.root,
        timeout=60,
    )
    assert result.returncode == 0, describe(result)
    expected = "cgroup v2" if mode == "cgroups" else "process groups + subreaper"
    assert f"containment: {expected}" in (project.root / "logs/app.log").read_text()
    return {m["name"]: m["pid"] for m in project.status()["modules"]}


def _written(path: Path) -> str:
    """What `path` holds, once it exists (its writer writes it at once)."""
    return path.read_text() if path.exists() else ""


def _pids(pid_file: Path, generation: int) -> list[int] | None:
    """The two pids a module's `generation`th start wrote, once both are there."""
    pids = pid_file.read_text().split()[2 * generation :] if pid_file.exists() else []
    return [int(pid) for pid in pids[:2]] if len(pids) >= 2 else None


@pytest.fixture
def escapers() -> Iterator[list[psutil.Process]]:
    """The processes the modules started; those a failing test left alive are killed after it
    (the project's own cleanup cannot find a daemon that cleared its environment)."""
    found: list[psutil.Process] = []
    yield found
    for proc in _alive(found):
        proc.kill()


def _escapers(
    project: Project, found: list[psutil.Process], generation: int = 0
) -> list[psutil.Process]:
    """The processes each module started in its `generation`th start (two per start); also
    added to `found`."""
    start = len(found)
    for name in MODULES:
        pid_file = project.root / f"{name}.pids"
        pids = wait_until(
            lambda f=pid_file: _pids(f, generation),  # type: ignore[misc]
            10,
            f"the processes of {name}'s start #{generation + 1}",
        )
        found.extend(psutil.Process(pid) for pid in pids)
    return found[start:]


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie, or a pid reused by another process, counts as gone)."""
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def _all_gone(procs: list[psutil.Process], what: str, project: Project) -> None:
    wait_until(
        lambda: not _alive(procs),
        10,
        what,
        lambda: f"alive: {_alive(procs)}\n{project.log('forked')}\n{project.log('spawned')}",
    )


@pytest.mark.parametrize("mode", MODES)
def test_restart_takes_a_modules_hidden_processes_with_it(
    project: Project, mode: str, escapers: list[psutil.Process]
) -> None:
    _up(project, mode)
    first = _escapers(project, escapers)
    assert len(_alive(first)) == 4
    for name in MODULES:
        project.cli("restart", name, check=0)
    _all_gone(first, "the first processes killed by the restarts", project)
    assert len(_alive(_escapers(project, escapers, 1))) == 4  # and the new ones run


@pytest.mark.parametrize("mode", MODES)
def test_a_sigkilled_module_process_takes_its_hidden_processes_with_it(
    project: Project, mode: str, escapers: list[psutil.Process]
) -> None:
    pids = _up(project, mode)
    first = _escapers(project, escapers)
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)  # it runs no code: the supervisor sweeps what it left
    _all_gone(first, "the processes of the killed modules", project)
    for name in MODULES:
        project.wait_module(name, state="running", restarts=1)


@pytest.mark.parametrize("mode", MODES)
def test_a_sigkilled_supervisor_leaves_no_process_alive(
    project: Project, mode: str, escapers: list[psutil.Process]
) -> None:
    pids = _up(project, mode)
    first = _escapers(project, escapers)
    supervisor = project.status()["supervisor"]["pid"]
    modules = [psutil.Process(pid) for pid in pids.values()]
    # One of them SIGSTOPped: it cannot see its lifeline close until something continues it.
    stopped = psutil.Process(pids["forked"])
    stopped.suspend()
    wait_until(lambda: stopped.status() == psutil.STATUS_STOPPED, 5, "the module stopped")
    os.kill(supervisor, signal.SIGKILL)
    _all_gone(first + modules, "every module and all they started to die", project)
    wait_until(lambda: project.processes() == [], 10, "no process of the project left")


# Its process dies in its orphan grace, before its shim can take down what it started (as a
# crash, an abort in a C extension or another thread's os._exit() would).
DIES_IN_ITS_GRACE = """
import os
import subprocess


def initialize(event_bus, config):
    sleeper = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    with open(config["pid_file"], "w") as out:
        out.write(str(sleeper.pid))


def shutdown():
    os._exit(1)
"""


@pytest.mark.parametrize("mode", MODES)
def test_what_a_module_started_dies_even_if_its_process_dies_in_its_orphan_grace(
    project: Project, mode: str, escapers: list[psutil.Process]
) -> None:
    """Reparented to init when their module's process died, they lived on (until the next `up`
    found them in its cgroup, with cgroup v2): its undertaker kills them."""
    pid_files = _configure(project, project.write_module("deserter.py", DIES_IN_ITS_GRACE))
    _start(project, mode)
    for pid_file in pid_files.values():
        pid = wait_until(partial(_written, pid_file), 10, f"the pid in {pid_file.name}")
        escapers.append(psutil.Process(int(pid)))
    os.kill(project.status()["supervisor"]["pid"], signal.SIGKILL)
    _all_gone(list(escapers), "what the modules started", project)
    wait_until(lambda: project.processes() == [], 10, "no process left, nor an undertaker")


# A subreaper in the supervisor's session that outlives it: the modules it adopts when the
# supervisor dies have a parent in their own session, so the kernel sees no orphaned process
# group and sends no SIGHUP+SIGCONT to a stopped one. Only their parent-death signal wakes them.
ADOPTER_IN_SESSION = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
subprocess.call(sys.argv[1:])
time.sleep(60)
"""


def test_stopped_modules_wake_up_and_clean_up_when_the_supervisor_dies(
    project: Project, escapers: list[psutil.Process]
) -> None:
    _configure(project)
    command = [sys.executable, "-m", "orchestrator", "up", "-c", str(project.config_dir)]
    adopter = subprocess.Popen(
        [sys.executable, "-c", ADOPTER_IN_SESSION, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=project.env,
        cwd=project.root,
    )
    try:
        for name in MODULES:
            project.wait_module(name, state="running")
        first = _escapers(project, escapers)
        status = project.status()
        modules = [psutil.Process(m["pid"]) for m in status["modules"]]
        for module in modules:
            module.suspend()
        wait_until(
            lambda: all(m.status() == psutil.STATUS_STOPPED for m in modules), 5, "both stopped"
        )
        os.kill(status["supervisor"]["pid"], signal.SIGKILL)
        _all_gone(first + modules, "the stopped modules and all they started to die", project)
    finally:
        adopter.kill()
        adopter.wait()


def test_a_module_reaps_the_orphans_it_adopts_but_not_its_own_children(
    project: Project, escapers: list[psutil.Process]
) -> None:
    daemon_file, report = project.root / "daemon.pid", project.root / "report"
    project.configure(
        [
            {
                "name": "adopter",
                "path": project.probe("adopter"),
                "config": {"daemon_file": str(daemon_file), "report": str(report)},
            }
        ]
    )
    project.up()
    daemon = psutil.Process(int(daemon_file.read_text()))
    escapers.append(daemon)
    module = project.module("adopter")["pid"]
    assert daemon.ppid() == module  # adopted by the module process, not by the supervisor
    daemon.kill()
    # No zombie left behind, and the module's own child's exit code still its to read.
    assert wait_until(lambda: report.exists() and report.read_text(), 10, "the report") == "3\n"
