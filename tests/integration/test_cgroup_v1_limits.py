"""Module limits on cgroup v1 hierarchies, where cgroup v2 lacks the controller (as on hosts with
memory, cpu and pids on v1): the kernel's files hold them, the module process is inside, status
says how, and no group is left behind, even by a SIGKILLed supervisor. (The OOM kill and the
EAGAIN past pids_max are test_isolation's, which run on v1 wherever v2 cannot.)"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from project import Project, alive

from orchestrator.cgroup_limits import CONTROLLERS
from orchestrator.cgroup_v1 import PREFIX, v1_mounts, v1_paths_of
from orchestrator.cgroups import ModuleCgroups
from orchestrator.config.limits import ModuleLimits
from orchestrator.rundir import RunDir

LIMITS = {"memory_max_mb": 64, "cpu_quota": 0.25, "pids_max": 32}

IDLE = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass
"""


def _v1_controllers() -> frozenset[str]:
    """The controllers a supervisor here enforces on cgroup v1 (a probe, removed)."""
    probe = ModuleCgroups(f"probe-{uuid.uuid4().hex[:8]}")
    try:
        probe.prepare("probe", ModuleLimits(memory_max_mb=64, cpu_quota=0.25, pids_max=32))
        how = probe.enforced_by["probe"]
        return frozenset(CONTROLLERS[key] for key, by in how.items() if by == "cgroup v1")
    finally:
        probe.close()


V1 = _v1_controllers()
pytestmark = pytest.mark.skipif(
    not V1, reason="no writable cgroup v1 hierarchy for a controller cgroup v2 lacks here"
)


def _bases(project: Project) -> dict[str, Path]:
    """Our base group in the v1 hierarchy of each controller enforced there."""
    key = RunDir(project.config_dir, project.run_base).key
    mounts, own = v1_mounts(), v1_paths_of()
    return {c: mounts[c] / own.get(c, "/").lstrip("/") / f"{PREFIX}{key}" for c in V1}


def _start(project: Project, name: str) -> dict[str, Any]:
    path = project.write_module(f"{name}.py", IDLE)
    project.configure([{"name": name, "path": path, "restart": "never", **LIMITS}])
    project.up()
    return project.wait_module(name, state="running")


def test_v1_limits_are_written_joined_reported_and_removed_at_down(project: Project) -> None:
    row = _start(project, "limited")
    for key, controller in CONTROLLERS.items():
        if controller in V1:
            entry = row["limits"][key]
            assert entry == {"value": LIMITS[key], "enforced": True, "note": "enforced (cgroup v1)"}
    groups = {c: base / "limited" for c, base in _bases(project).items()}
    for group in groups.values():
        procs = (group / "cgroup.procs").read_text().split()
        assert str(row["pid"]) in procs, (group, procs)  # joined before module code ran
    if "memory" in groups:
        memory = groups["memory"]
        assert int((memory / "memory.limit_in_bytes").read_text()) == 64 << 20
        if (memory / "memory.memsw.limit_in_bytes").exists():  # swap does not dodge it
            assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 64 << 20
        assert "oom_kill_disable 0" in (memory / "memory.oom_control").read_text()
    if "cpu" in groups:
        assert (groups["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert (groups["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    if "pids" in groups:
        assert (groups["pids"] / "pids.max").read_text().strip() == "32"
    assert "enforced (cgroup v1)" in project.cli("status", "limited", check=0).stdout
    project.cli("down", check=0)
    left = [str(base) for base in _bases(project).values() if base.exists()]
    assert left == [], left


def test_v1_groups_a_sigkilled_supervisor_left_go_at_the_next_up(project: Project) -> None:
    row = _start(project, "first")
    supervisor = project.status()["supervisor"]["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not alive(row["pid"]), 15, "the module to go with its supervisor")
    wait_until(lambda: project.processes() == [], 15, "no process of the project left")
    stale = [base / "first" for base in _bases(project).values()]
    assert all(group.is_dir() for group in stale), stale  # nobody could remove them: yet
    _start(project, "second")  # the next supervisor, with another module
    assert [group for group in stale if group.exists()] == []
    assert all((base / "second").is_dir() for base in _bases(project).values())
    project.cli("down", check=0)
    assert [base for base in _bases(project).values() if base.exists()] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_a_module_run_as_nobody_joins_its_v1_groups_before_dropping_root(project: Project) -> None:
    for path in (project.root, project.root / "modules"):
        path.chmod(0o755)
    path = project.write_module("dropper.py", IDLE)
    (project.root / "modules" / "dropper.py").chmod(0o644)
    entry = {"name": "dropper", "path": path, "user": "nobody", "start_method": "spawn", **LIMITS}
    project.configure([entry])
    project.up()
    row = project.wait_module("dropper", state="running")
    for base in _bases(project).values():
        assert str(row["pid"]) in (base / "dropper" / "cgroup.procs").read_text().split()
    assert all(row["limits"][key]["enforced"] for key in LIMITS), row["limits"]
