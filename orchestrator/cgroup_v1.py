"""Kernel-enforced module limits on cgroup v1 hierarchies, for hosts whose memory, cpu or pids
controller is not on cgroup v2 (orchestrator/cgroups.py asks here for what v2 cannot enforce).

Each controller's hierarchy gets `<mount>/<our cgroup there>/orchestrator-<key>/<module>`, like
the v2 layout; the module process joins every one of them itself, before any module code runs
(module_sdk/limits.py, `ENV_CGROUPS_V1`). v1 has no cgroup.kill and no memory.oom.group: the
OOM killer takes the largest process of the group, and a kill is one SIGKILL per process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

from orchestrator.cgroup_limits import CONTROLLERS, CPU_PERIOD, make_base, remove_group
from orchestrator.config.limits import ModuleLimits

log = logging.getLogger(__name__)

PREFIX = "orchestrator-"  # <our cgroup>/orchestrator-<key>/<module>, on v2 as on v1
MECHANISM = "cgroup v1"
_UNLIMITED = "-1"
_OOM_NEAR = 0.9  # without oom_kill in memory.oom_control: peak usage this close to the limit


def v1_mounts(mountinfo: str | None = None) -> dict[str, Path]:
    """Where each v1 controller of memory, cpu and pids is mounted (`/proc/self/mountinfo`)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return {}
    found: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        for option in extra[2].split(","):
            if option in CONTROLLERS.values() and option not in found:
                found[option] = Path(parts[4])
    return found


def sweep(key: str, mounts: dict[str, Path] | None = None) -> None:
    """Remove the empty module groups (and base) a supervisor of `key` left in the v1
    hierarchies: one that was SIGKILLed, whose module processes have exited since."""
    own = v1_paths_of()
    for controller, mount in (v1_mounts() if mounts is None else mounts).items():
        base = mount / own.get(controller, "/").lstrip("/") / f"{PREFIX}{key}"
        with contextlib.suppress(OSError):
            for group in [p for p in base.iterdir() if p.is_dir()]:
                with contextlib.suppress(OSError):
                    group.rmdir()
            base.rmdir()


def v1_paths_of(pid: int | str = "self") -> dict[str, str]:
    """A process's cgroup in each v1 hierarchy, by controller (`N:cpu,cpuacct:/a/b` lines)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        for name in controllers.split(","):
            if name:
                paths[name] = path
    return paths


class V1Cgroups:
    """Per-module cgroups in the v1 hierarchies of the controllers asked for."""

    def __init__(
        self, key: str, controllers: frozenset[str], mounts: dict[str, Path] | None = None
    ) -> None:
        self.bases: dict[str, Path] = {}  # controller -> our base group in its hierarchy
        self.why: dict[str, str] = {}  # controller -> why it has no base
        self._oom: dict[str, tuple[int, int]] = {}  # module -> (oom_kill, failcnt) at its start
        mounts = v1_mounts() if mounts is None else mounts
        own = v1_paths_of()
        for controller in sorted(controllers):
            mount = mounts.get(controller)
            if mount is None:
                self.why[controller] = f"no cgroup v1 {controller} hierarchy either"
                continue
            base = mount / own.get(controller, "/").lstrip("/") / f"{PREFIX}{key}"
            try:
                make_base(base)
            except OSError as exc:
                self.why[controller] = f"cgroup v1 {controller} at {mount} is not writable here"
                log.debug("cannot use cgroup v1 %s at %s: %s", controller, base, exc)
                continue
            self.bases[controller] = base

    def groups(self, module: str) -> list[Path]:
        """The module's group in each hierarchy (one per hierarchy: cpu,cpuacct share one)."""
        return sorted({base / module for base in self.bases.values()})

    def prepare(self, module: str, limits: ModuleLimits) -> dict[str, str]:
        """Create the module's groups and write its limits there; return why each limit it
        sets (of the controllers asked for) is not enforced."""
        notes: dict[str, str] = {}
        for key, controller in CONTROLLERS.items():
            wanted = getattr(limits, key) is not None
            if controller not in self.bases and controller not in self.why:
                continue  # v2 has it
            if controller not in self.bases:
                if wanted:
                    notes[key] = self.why[controller]
                continue
            group = self.bases[controller] / module
            try:
                group.mkdir(exist_ok=True)
                _WRITERS[controller](group, limits)
            except OSError as exc:
                if wanted:
                    notes[key] = f"cannot set up cgroup v1 {group}: {exc.strerror or exc}"
        if "memory" in self.bases:
            self._oom[module] = _oom_counts(self.bases["memory"] / module)
        return notes

    def oom_killed(self, module: str) -> bool:
        """Whether the kernel OOM-killed in the module's memory group since its start."""
        if "memory" not in self.bases:
            return False
        group = self.bases["memory"] / module
        seen_kills, seen_fails = self._oom.get(module, (0, 0))
        kills, fails = _oom_counts(group)
        self._oom[module] = (kills, fails)
        if _read(group / "memory.oom_control").find("oom_kill ") >= 0:
            return kills > seen_kills
        limit, peak = (
            _number(group / "memory.limit_in_bytes"),
            _number(group / "memory.max_usage_in_bytes"),
        )
        return fails > seen_fails and limit > 0 and peak >= limit * _OOM_NEAR

    def pids(self, module: str) -> list[int]:
        """The processes in any of the module's groups now."""
        found: set[int] = set()
        for group in self.groups(module):
            with contextlib.suppress(OSError, ValueError):
                found.update(int(pid) for pid in (group / "cgroup.procs").read_text().split())
        return sorted(found)

    def kill(self, module: str) -> list[int]:
        """SIGKILL every process in the module's groups; returns their pids."""
        victims = self.pids(module)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def remove(self, module: str) -> None:
        """Kill what is left and remove the module's groups."""
        self.kill(module)
        for group in self.groups(module):
            remove_group(group)

    def close(self) -> None:
        """Remove every module group and our base groups."""
        for base in set(self.bases.values()):
            with contextlib.suppress(OSError):
                for group in [p for p in base.iterdir() if p.is_dir()]:
                    self.kill(group.name)
                    remove_group(group)
            remove_group(base)


def _write_memory(group: Path, limits: ModuleLimits) -> None:
    # memsw (memory + swap) must stay >= the memory limit at every step: lift it first.
    memsw = group / "memory.memsw.limit_in_bytes"
    value = _UNLIMITED if limits.memory_max_mb is None else str(limits.memory_max_mb << 20)
    if memsw.exists():
        memsw.write_text(f"{_UNLIMITED}\n")
    (group / "memory.limit_in_bytes").write_text(f"{value}\n")
    if memsw.exists():  # so that swapping out does not dodge the limit
        memsw.write_text(f"{value}\n")
    with contextlib.suppress(OSError):  # the OOM killer on, whatever someone set before
        (group / "memory.oom_control").write_text("0\n")


def _write_cpu(group: Path, limits: ModuleLimits) -> None:
    (group / "cpu.cfs_period_us").write_text(f"{CPU_PERIOD}\n")
    quota = _UNLIMITED if limits.cpu_quota is None else str(round(limits.cpu_quota * CPU_PERIOD))
    (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")


def _write_pids(group: Path, limits: ModuleLimits) -> None:
    value = "max" if limits.pids_max is None else str(limits.pids_max)
    (group / "pids.max").write_text(f"{value}\n")


_WRITERS = {"memory": _write_memory, "cpu": _write_cpu, "pids": _write_pids}


def _oom_counts(group: Path) -> tuple[int, int]:
    kills = 0
    for line in _read(group / "memory.oom_control").splitlines():
        name, _, value = line.partition(" ")
        if name == "oom_kill" and value.strip().isdigit():
            kills = int(value)
    return kills, _number(group / "memory.failcnt")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _number(path: Path) -> int:
    text = _read(path).strip()
    return int(text) if text.lstrip("-").isdigit() else 0
