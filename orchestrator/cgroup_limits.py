"""The cgroup v2 files that hold a module's kernel-enforced limits: memory.max, cpu.max and
pids.max, and the controllers that make them exist (orchestrator/cgroups.py places the modules).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

from module_sdk.process import proc_stat
from orchestrator.config.limits import ModuleLimits

log = logging.getLogger(__name__)

CONTROLLERS = {"memory_max_mb": "memory", "cpu_quota": "cpu", "pids_max": "pids"}
CPU_PERIOD = 100_000  # microseconds: cpu.max is "<quota> <period>"


def delegate(root: Path, base: Path, leaf: Path | None = None) -> tuple[frozenset[str], str]:
    """Enable the memory, cpu and pids controllers for the cgroups below `base` (and so in
    `root`, our own cgroup, for `base`); return those that module cgroups now have, and why any
    other is missing (empty when none is).

    The kernel refuses (EBUSY) to enable a controller for the children of a cgroup that holds
    processes, but in the root cgroup; if all of `root`'s processes are the supervisor and its
    descendants, they move to `leaf` first (as systemd asks of a service with `Delegate=yes`)."""
    wanted = set(CONTROLLERS.values())
    why = ""
    for group in (root, base):
        try:
            offered = set((group / "cgroup.controllers").read_text().split())
            enabled = set((group / "cgroup.subtree_control").read_text().split())
        except OSError as exc:
            return frozenset(), f"cannot read {group}: {exc.strerror}"
        missing = wanted - offered
        if missing:
            why = f"the {'/'.join(sorted(missing))} controller is not available in {group}"
        for name in sorted((wanted & offered) - enabled):
            try:
                _enable(group, name, leaf if group == root else None)
            except OSError as exc:  # EBUSY: processes of its own (the supervisor's cgroup)
                why = f"cannot enable the {name} controller in {group}: {exc.strerror}"
        try:
            wanted &= set((group / "cgroup.subtree_control").read_text().split())
        except OSError as exc:
            return frozenset(), f"cannot read {group}: {exc.strerror}"
    return frozenset(wanted), why


def _enable(group: Path, name: str, leaf: Path | None) -> None:
    control = group / "cgroup.subtree_control"
    try:
        control.write_text(f"+{name}\n")
    except OSError as exc:
        if exc.errno != errno.EBUSY or leaf is None or not vacate(group, leaf):
            raise
        control.write_text(f"+{name}\n")


def vacate(group: Path, leaf: Path) -> bool:
    """Move every process of `group` into its child `leaf` if every one of them is this process
    or a descendant of it; True if it did (and `group` is then free to delegate)."""
    try:
        pids = [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return False
    if not pids or not all(_ours(pid) for pid in pids):
        return False
    try:
        leaf.mkdir(exist_ok=True)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                (leaf / "cgroup.procs").write_text(f"{pid}\n")
    except OSError as exc:
        log.warning("cannot move the supervisor's processes to %s: %s", leaf, exc)
        return False
    log.info("moved the supervisor's %d process(es) to %s to delegate controllers", len(pids), leaf)
    return True


def _ours(pid: int) -> bool:
    """Whether `pid` is this process or one of its descendants."""
    me = os.getpid()
    for _ in range(64):
        if pid == me:
            return True
        stat = proc_stat(pid)
        if stat is None or stat.ppid <= 1:
            return False
        pid = stat.ppid
    return False


def write_limits(
    group: Path, limits: ModuleLimits, controllers: tuple[frozenset[str], str]
) -> dict[str, str]:
    """Write the module's limits in its cgroup `group` (and "max" where it sets none, so that a
    reload that removed one takes effect); return why each limit it sets is not enforced."""
    available, why_missing = controllers
    values = {
        "memory.max": _memory(limits.memory_max_mb),
        "memory.swap.max": "0" if limits.memory_max_mb is not None else "max",
        "memory.oom.group": "1",  # the module and all it started go together
        "cpu.max": _cpu(limits.cpu_quota),
        "pids.max": str(limits.pids_max) if limits.pids_max is not None else "max",
    }
    notes: dict[str, str] = {}
    for key, controller in CONTROLLERS.items():
        wanted = getattr(limits, key) is not None
        if controller not in available:
            if wanted:
                notes[key] = why_missing or f"the {controller} controller is not available"
            continue
        for name, value in values.items():
            if not name.startswith(f"{controller}."):
                continue
            try:
                (group / name).write_text(f"{value}\n")
            except FileNotFoundError:
                continue  # memory.swap.max without swap accounting
            except OSError as exc:
                if wanted and name in ("memory.max", "cpu.max", "pids.max"):
                    notes[key] = f"cannot write {group / name}: {exc.strerror}"
    return notes


def oom_kills(group: Path) -> int:
    """How many processes the OOM killer killed in `group` (memory.events oom_kill)."""
    with contextlib.suppress(OSError, ValueError):
        for line in (group / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def _memory(mb: int | None) -> str:
    return str(mb * 1024 * 1024) if mb is not None else "max"


def _cpu(quota: float | None) -> str:
    return f"{round(quota * CPU_PERIOD)} {CPU_PERIOD}" if quota is not None else f"max {CPU_PERIOD}"


_KILL_WAIT = 1.0  # seconds for a killed cgroup to empty before giving up on removing it


def make_base(base: Path) -> None:
    """Create our base cgroup directory (if need be) and prove that cgroups can be made in it, as
    each module's is: raises OSError if not (not mounted writable, or not ours)."""
    base.mkdir(exist_ok=True)
    probe = base / "probe"
    probe.mkdir(exist_ok=True)
    probe.rmdir()


def remove_group(group: Path) -> None:
    """Remove cgroup directory `group` (v1 or v2), waiting up to a second for the processes
    killed in it to be reaped; a warning if it stays."""
    deadline = time.monotonic() + _KILL_WAIT
    while True:  # a killed cgroup empties as its processes are reaped
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                log.warning("cannot remove cgroup %s: %s", group, exc)
                return
            time.sleep(0.01)
