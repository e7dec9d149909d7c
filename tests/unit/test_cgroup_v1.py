"""The cgroup v1 fallback on directory trees laid out like v1 hierarchies: which files a module's
limits become, what v2 keeps, the OOM count, the sweep of a killed supervisor's groups, and the
module process's side (joining). The kernel's own checks are test_cgroup_v1_limits'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from module_sdk import protocol
from module_sdk.limits import ENV_CGROUPS_V1, ENV_LIMITS, EXIT_LIMITS_FAILED, LimitsError, join_v1
from orchestrator.cgroup_v1 import V1Cgroups, sweep, v1_mounts, v1_paths_of
from orchestrator.cgroups import ModuleCgroups
from orchestrator.config.limits import ModuleLimits
from orchestrator.isolation import limits_report

ALL = frozenset({"memory", "cpu", "pids"})
LIMITS = ModuleLimits(memory_max_mb=64, cpu_quota=0.5, pids_max=16)


def fake_v1(tmp_path: Path, controllers: frozenset[str] = ALL) -> dict[str, Path]:
    """A mount per controller, with this process's own cgroup in it (as the kernel has it)."""
    own = v1_paths_of()
    mounts = {}
    for controller in controllers:
        mount = tmp_path / controller
        (mount / own.get(controller, "/").lstrip("/")).mkdir(parents=True, exist_ok=True)
        mounts[controller] = mount
    return mounts


def group_of(mounts: dict[str, Path], controller: str, key: str, module: str) -> Path:
    own = v1_paths_of().get(controller, "/").lstrip("/")
    return mounts[controller] / own / f"orchestrator-{key}" / module


def test_mountinfo_names_each_controllers_hierarchy_and_ignores_garbage() -> None:
    mountinfo = "\n".join(
        [
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,pids",  # v2: not here
            "garbage",
            "1 2 3 - cgroup",
            "",
        ]
    )
    assert v1_mounts(mountinfo) == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }


def test_limits_become_the_v1_files_with_swap_held_too(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path)
    memory = group_of(mounts, "memory", "k", "m")
    memory.mkdir(parents=True)
    (memory / "memory.memsw.limit_in_bytes").write_text("")  # swap accounting on
    cgroups = V1Cgroups("k", ALL, mounts)
    assert cgroups.prepare("m", LIMITS) == {}
    assert (memory / "memory.limit_in_bytes").read_text() == f"{64 << 20}\n"
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == f"{64 << 20}\n"
    assert (memory / "memory.oom_control").read_text() == "0\n"  # the OOM killer stays on
    cpu = group_of(mounts, "cpu", "k", "m")
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000\n"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000\n"
    assert (group_of(mounts, "pids", "k", "m") / "pids.max").read_text() == "16\n"
    assert cgroups.prepare("m", ModuleLimits()) == {}  # a reload that removed them all
    assert (memory / "memory.limit_in_bytes").read_text() == "-1\n"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1\n"
    assert (group_of(mounts, "pids", "k", "m") / "pids.max").read_text() == "max\n"


def test_a_hierarchy_shared_by_two_controllers_is_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.cgroup_v1.v1_paths_of", dict)  # in the root cgroup
    mount = tmp_path / "cpu,pids"
    mount.mkdir()
    cgroups = V1Cgroups("k", frozenset({"cpu", "pids"}), {"cpu": mount, "pids": mount})
    assert cgroups.prepare("m", LIMITS) == {}
    assert cgroups.groups("m") == [mount / "orchestrator-k" / "m"]
    assert (mount / "orchestrator-k" / "m" / "pids.max").read_text() == "16\n"


def test_v2_keeps_what_it_has_and_v1_takes_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("pids\n")
    (root / "cgroup.subtree_control").write_text("pids\n")
    mounts = fake_v1(tmp_path / "v1")
    cgroups = ModuleCgroups("k", root=root, v1_mounts=mounts)
    base = root / "orchestrator-k"
    (base / "cgroup.controllers").write_text("pids\n")
    (base / "cgroup.subtree_control").write_text("pids\n")
    assert cgroups.prepare("m", LIMITS) == str(base / "m")
    assert cgroups.notes["m"] == {}
    assert cgroups.enforced_by["m"] == {
        "memory_max_mb": "cgroup v1",
        "cpu_quota": "cgroup v1",
        "pids_max": "cgroup v2",
    }
    assert not group_of(mounts, "pids", "k", "m").exists()  # v2 has pids: no v1 group
    joined = cgroups.env("m")[ENV_CGROUPS_V1].split(os.pathsep)
    assert sorted(joined) == sorted(str(group_of(mounts, c, "k", "m")) for c in ("cpu", "memory"))
    report = limits_report(LIMITS, cgroups.notes["m"], cgroups.enforced_by["m"])
    assert report["memory_max_mb"] == {
        "value": 64,
        "enforced": True,
        "note": "enforced (cgroup v1)",
    }
    assert report["pids_max"]["note"] == "enforced (cgroup v2)"


def test_without_v2_or_a_writable_v1_each_limit_says_why_for_both(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path, frozenset({"memory", "pids"}))
    group_of(mounts, "memory", "k", "m").parent.parent.chmod(0o500)  # not ours to write
    try:
        cgroups = ModuleCgroups("k", root=tmp_path / "missing", v1_mounts=mounts)
        cgroups.prepare("m", LIMITS)
    finally:
        group_of(mounts, "memory", "k", "m").parent.parent.chmod(0o700)
    notes = cgroups.notes["m"]
    if os.geteuid() != 0:  # root writes through the mode
        assert notes["memory_max_mb"].startswith("no writable cgroup v2; cgroup v1 memory at")
    assert notes["cpu_quota"] == "no writable cgroup v2; no cgroup v1 cpu hierarchy either"
    assert "pids_max" not in notes and cgroups.enforced_by["m"]["pids_max"] == "cgroup v1"
    assert cgroups.env("m") != {}


def test_with_no_v1_hierarchy_at_all_the_notes_say_so(tmp_path: Path) -> None:
    cgroups = ModuleCgroups("k", root=tmp_path / "missing", v1_mounts={})
    cgroups.prepare("m", ModuleLimits(pids_max=4))
    assert cgroups.notes["m"] == {
        "pids_max": "no writable cgroup v2; no cgroup v1 pids hierarchy either"
    }
    assert cgroups.enforced_by["m"] == {} and cgroups.env("m") == {}


def test_no_limits_no_v1_groups(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path)
    cgroups = ModuleCgroups("k", root=tmp_path / "missing", v1_mounts=mounts)
    assert cgroups.prepare("m", ModuleLimits()) is None
    assert cgroups.env("m") == {}
    assert not group_of(mounts, "memory", "k", "m").parent.exists()


def test_an_oom_kill_is_counted_from_oom_control_or_else_from_failcnt(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path, frozenset({"memory"}))
    cgroups = V1Cgroups("k", frozenset({"memory"}), mounts)
    group = group_of(mounts, "memory", "k", "m")
    group.mkdir(parents=True)
    cgroups.prepare("m", LIMITS)
    assert not cgroups.oom_killed("m")
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert cgroups.oom_killed("m")
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (group / "memory.failcnt").write_text("9\n")
    assert cgroups.oom_killed("m")
    assert not cgroups.oom_killed("m")  # nothing new since
    # An older kernel: no oom_kill line; failures at a peak by the limit stand for one.
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (group / "memory.max_usage_in_bytes").write_text(f"{(64 << 20) - 4096}\n")
    (group / "memory.failcnt").write_text("12\n")
    assert cgroups.oom_killed("m")
    assert not cgroups.oom_killed("m")
    (group / "memory.failcnt").write_text("15\n")
    (group / "memory.max_usage_in_bytes").write_text(f"{8 << 20}\n")  # far below: not an OOM
    assert not cgroups.oom_killed("m")


def test_module_cgroups_names_an_oom_kill_only_for_a_sigkilled_exit(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path, frozenset({"memory"}))
    cgroups = ModuleCgroups("k", root=tmp_path / "missing", v1_mounts=mounts)
    cgroups.prepare("m", ModuleLimits(memory_max_mb=64))
    group = group_of(mounts, "memory", "k", "m")
    (group / "memory.oom_control").write_text("oom_kill 1\n")
    assert not cgroups.oom_killed("m", 1 << 8)  # exit 1: not the OOM killer's
    (group / "memory.oom_control").write_text("oom_kill 2\n")
    assert cgroups.oom_killed("m", signal.SIGKILL)


def test_the_sweep_removes_empty_groups_of_its_key_only(tmp_path: Path) -> None:
    mounts = fake_v1(tmp_path, frozenset({"pids"}))
    gone = group_of(mounts, "pids", "k", "gone")
    busy = group_of(mounts, "pids", "k", "busy")
    other = group_of(mounts, "pids", "other", "m")
    for group in (gone, busy, other):
        group.mkdir(parents=True)
    (busy / "cgroup.procs").write_text("1\n")  # a directory with a file: rmdir fails, as busy
    sweep("k", mounts)
    assert not gone.exists() and busy.exists() and other.exists()
    sweep("never-made", mounts)  # nothing there: nothing to do


def test_the_module_process_joins_every_group_or_refuses_to_run(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for group in (first, second):
        group.mkdir()
    join_v1(f"{first}{os.pathsep}{second}{os.pathsep}")
    assert (first / "cgroup.procs").read_text() == f"{os.getpid()}\n"
    assert (second / "cgroup.procs").read_text() == f"{os.getpid()}\n"
    join_v1("")
    with pytest.raises(LimitsError, match="cannot join cgroup"):
        join_v1(str(tmp_path / "missing"))


SHOW = """
import os
from module_sdk.limits import apply_from_env
apply_from_env()
print(os.getpid(), os.environ.get("ORCHESTRATOR_CGROUPS_V1", "-"))
"""


def _run(limits: dict[str, object], groups: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, ENV_LIMITS: json.dumps(limits), ENV_CGROUPS_V1: groups}
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**env, protocol.ENV_MODULE: "probe"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="setgroups needs root")
def test_a_module_that_switches_ids_joins_first_or_refuses_to_run(tmp_path: Path) -> None:
    ids = {"gid": os.getgid(), "groups": os.getgroups()}
    group = tmp_path / "pids"
    group.mkdir()
    result = _run(ids, str(group))
    assert result.returncode == 0, result.stderr
    pid, left = result.stdout.split()
    assert (group / "cgroup.procs").read_text() == f"{pid}\n"  # before it drops privileges
    assert left == "-"  # consumed: module code does not see it
    result = _run(ids, str(tmp_path / "gone"))
    assert result.returncode == EXIT_LIMITS_FAILED, result
    assert result.stderr.startswith("probe: cannot apply its limits: cannot join cgroup")


def test_otherwise_the_groups_are_left_for_the_shim_to_join(tmp_path: Path) -> None:
    result = _run({"umask": 0o22}, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[1] == str(tmp_path)
    assert not (tmp_path / "cgroup.procs").exists()
