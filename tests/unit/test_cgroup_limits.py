"""The cgroup v2 files a module's limits become, the controllers they need and the OOM count,
on a directory tree laid out like a cgroup (the kernel's own checks are the integration tests')."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from orchestrator.cgroup_limits import delegate, oom_kills, vacate, write_limits
from orchestrator.cgroups import ModuleCgroups
from orchestrator.config import ModuleSpec
from orchestrator.config.limits import FilesystemAccess, ModuleLimits
from orchestrator.isolation import limits_env, limits_report

ALL = frozenset({"memory", "cpu", "pids"})


def fake_cgroup(path: Path, offered: str, enabled: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(offered + "\n")
    (path / "cgroup.subtree_control").write_text(enabled + "\n")
    return path


def test_limits_become_the_cgroup_files(tmp_path: Path) -> None:
    limits = ModuleLimits(memory_max_mb=64, cpu_quota=0.25, pids_max=32)
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max", "pids.max"):
        (tmp_path / name).write_text("")
    assert write_limits(tmp_path, limits, (ALL, "")) == {}
    assert (tmp_path / "memory.max").read_text() == f"{64 * 1024 * 1024}\n"
    assert (tmp_path / "memory.swap.max").read_text() == "0\n"
    assert (tmp_path / "memory.oom.group").read_text() == "1\n"
    assert (tmp_path / "cpu.max").read_text() == "25000 100000\n"
    assert (tmp_path / "pids.max").read_text() == "32\n"


def test_limits_no_longer_set_go_back_to_max(tmp_path: Path) -> None:
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "cpu.max", "pids.max"):
        (tmp_path / name).write_text("1\n")
    assert write_limits(tmp_path, ModuleLimits(), (ALL, "")) == {}
    assert (tmp_path / "memory.max").read_text() == "max\n"
    assert (tmp_path / "cpu.max").read_text() == "max 100000\n"
    assert (tmp_path / "pids.max").read_text() == "max\n"


def test_a_limit_without_its_controller_is_noted_not_written(tmp_path: Path) -> None:
    limits = ModuleLimits(memory_max_mb=64, pids_max=8)
    notes = write_limits(tmp_path, limits, (frozenset({"pids"}), "no memory here"))
    assert notes == {"memory_max_mb": "no memory here"}
    assert not (tmp_path / "memory.max").exists()


def test_delegate_keeps_controllers_already_enabled(tmp_path: Path) -> None:
    root = fake_cgroup(tmp_path / "root", "cpu memory pids io", "cpu memory pids")
    base = fake_cgroup(root / "base", "cpu memory pids", "memory cpu pids")
    assert delegate(root, base) == (ALL, "")


def test_delegate_enables_what_is_offered_and_says_what_is_not(tmp_path: Path) -> None:
    root = fake_cgroup(tmp_path / "root", "cpu memory io", "cpu")
    base = fake_cgroup(root / "base", "cpu memory io", "cpu")
    available, why = delegate(root, base)
    assert why == f"the pids controller is not available in {root}"
    # It asked for memory; a plain file holds the request, where the kernel would add it.
    assert (root / "cgroup.subtree_control").read_text() == "+memory\n"
    assert available == frozenset()


def test_delegate_of_an_unreadable_cgroup_gives_nothing(tmp_path: Path) -> None:
    assert delegate(tmp_path / "gone", tmp_path / "gone" / "base") == (
        frozenset(),
        f"cannot read {tmp_path / 'gone'}: No such file or directory",
    )


def test_oom_kill_is_read_from_memory_events(tmp_path: Path) -> None:
    assert oom_kills(tmp_path) == 0
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n")
    assert oom_kills(tmp_path) == 2


def test_an_oom_kill_names_only_a_sigkilled_exit_after_one_more_kill(tmp_path: Path) -> None:
    root = fake_cgroup(tmp_path, "")
    cgroups = ModuleCgroups("k", root=root, v1_mounts={})
    assert cgroups.available()
    group = Path(cgroups.prepare("m", ModuleLimits()) or "")
    sigkill = signal.SIGKILL  # a raw wait status of a process killed by SIGKILL is the signal
    assert not cgroups.oom_killed("m", sigkill)
    (group / "memory.events").write_text("oom_kill 1\n")
    assert not cgroups.oom_killed("m", 1 << 8)  # exit 1: not the OOM killer's, though counted
    (group / "memory.events").write_text("oom_kill 2\n")
    assert cgroups.oom_killed("m", sigkill)
    assert not cgroups.oom_killed("m", sigkill)  # nothing new since


def test_without_cgroups_every_cgroup_limit_is_noted(tmp_path: Path) -> None:
    cgroups = ModuleCgroups("k", root=tmp_path / "missing", v1_mounts={})
    assert not cgroups.available()
    limits = ModuleLimits(memory_max_mb=10, cpu_quota=1.0)
    assert cgroups.prepare("m", limits) is None
    report = limits_report(limits, cgroups.notes["m"])
    assert report["memory_max_mb"] == {
        "value": 10,
        "enforced": False,
        "note": "memory_max_mb not enforced: no writable cgroup v2; no cgroup v1 memory "
        "hierarchy either; polled instead (memory_limit_mb)",
    }
    assert report["cpu_quota"]["note"] == (
        "cpu_quota not enforced: no writable cgroup v2; no cgroup v1 cpu hierarchy either"
    )


def test_the_report_before_a_first_start(tmp_path: Path) -> None:
    report = limits_report(ModuleLimits(pids_max=5, umask=0o7, user="nobody"), None)
    assert report["pids_max"]["enforced"] is False
    assert report["umask"] == {"value": "007", "enforced": True, "note": ""}
    assert report["user"]["value"] == "nobody"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_module_run_as_another_user_may_rejoin_its_cgroup(tmp_path: Path) -> None:
    cgroups = ModuleCgroups("k", root=fake_cgroup(tmp_path, ""), v1_mounts={})
    group = Path(cgroups.prepare("m", ModuleLimits(user="nobody")) or "")
    (group / "cgroup.procs").write_text("")  # the kernel makes it; here, a second prepare
    cgroups.prepare("m", ModuleLimits(user="nobody"))
    assert (group / "cgroup.procs").stat().st_uid != 0


def test_nproc_is_noted_for_a_module_that_runs_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = ModuleLimits(rlimits=(("nproc", 10, 10), ("nofile", 64, 64)))
    monkeypatch.setattr("orchestrator.isolation.os.geteuid", lambda: 0)
    assert limits_report(limits, {})["rlimits"]["enforced"] is False
    as_nobody = ModuleLimits(rlimits=limits.rlimits, user="nobody")
    assert limits_report(as_nobody, {})["rlimits"]["enforced"] is True
    monkeypatch.setattr("orchestrator.isolation.os.geteuid", lambda: 1000)
    assert limits_report(limits, {})["rlimits"] == {
        "value": {"nproc": [10, 10], "nofile": [64, 64]},
        "enforced": True,
        "note": "",
    }


def test_the_supervisor_vacates_its_cgroup_only_if_every_process_there_is_its_own(
    tmp_path: Path,
) -> None:
    group = fake_cgroup(tmp_path / "service", "memory")
    leaf = group / "orchestrator-k.supervisor"
    (group / "cgroup.procs").write_text(f"{os.getpid()}\n1\n")  # init: not ours
    assert not vacate(group, leaf)
    assert not leaf.exists()
    helper = subprocess.Popen(["sleep", "30"])  # a helper of the supervisor's goes along
    try:
        (group / "cgroup.procs").write_text(f"{os.getpid()}\n{helper.pid}\n")
        assert vacate(group, leaf)
    finally:
        helper.kill()
        helper.wait()
    assert (leaf / "cgroup.procs").read_text() == f"{helper.pid}\n"  # a file keeps the last


def test_what_the_module_process_is_told_to_apply(tmp_path: Path) -> None:
    module = tmp_path / "mods" / "m.py"
    module.parent.mkdir()
    module.write_text("")
    limits = ModuleLimits(
        rlimits=(("nofile", 8, -1),),
        umask=0o27,
        user="nobody",
        filesystem=FilesystemAccess(read_only=(Path("/srv"),), read_write=(Path("/var/m"),)),
    )
    spec = ModuleSpec(name="m", path=module, limits=limits)
    told = json.loads(limits_env(spec, tmp_path / "run") or "")
    nobody = pwd.getpwnam("nobody")
    assert told["rlimits"] == [["nofile", 8, -1]] and told["umask"] == 0o27
    assert (told["uid"], told["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert nobody.pw_gid in told["groups"]
    assert told["run_dir"] == str(tmp_path / "run")
    assert told["landlock"] == {
        "read_only": [str(module.parent), "/srv"],
        "read_write": ["/var/m", str(tmp_path / "run")],
    }
    assert limits_env(ModuleSpec(name="m", path=module), tmp_path / "run") is None
