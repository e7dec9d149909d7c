"""Containment of each module's process tree in a cgroup v2, where one is mounted and writable.

A process cannot leave its cgroup by forking, `setsid` or clearing its environment, so killing a
module's cgroup kills everything it started. Where cgroup v2 is not available (or not ours to
write), `available()` is False and containment rests on subreapers: each module process is one for
its descendants, and the supervisor for the module processes (module_sdk/process.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

MODULE_CGROUPS_PREFIX = "orchestrator-"  # <our cgroup>/orchestrator-<key>/<module>
_KILL_WAIT = 1.0  # seconds to wait for a killed cgroup to empty before giving up on removing it


def cgroup2_mount() -> Path | None:
    """Where the cgroup2 hierarchy is mounted, or None without one."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    mount = next((line.split()[4] for line in mounts if " - cgroup2 " in line), None)
    return Path(mount) if mount is not None else None


def cgroup_of(pid: int | str = "self") -> str | None:
    """The cgroup v2 path of a process (`/a/b`, from its `/proc/PID/cgroup`), or None."""
    try:
        own = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    return next((line[3:] for line in own if line.startswith("0::")), None)


def cgroup2_root() -> Path | None:
    """Where this process's own cgroup v2 lives, or None without a cgroup2 mount."""
    mount, relative = cgroup2_mount(), cgroup_of()
    if mount is None or relative is None:
        return None
    return mount / relative.lstrip("/")


class ModuleCgroups:
    """One cgroup per module under `<our cgroup>/orchestrator-<key>/`."""

    def __init__(self, key: str) -> None:
        self.base: Path | None = None
        root = cgroup2_root()
        if root is None:
            return
        base = root / f"{MODULE_CGROUPS_PREFIX}{key}"
        try:
            base.mkdir(exist_ok=True)
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as exc:
            log.debug("cgroup v2 at %s is not writable here (%s); using process groups", root, exc)
            with contextlib.suppress(OSError):
                base.rmdir()
            return
        self.base = base

    def available(self) -> bool:
        return self.base is not None

    def prepare(self, module: str) -> str | None:
        """Create the module's cgroup; the module process joins it itself, at its start, before
        any module code runs. None without cgroups (or if it cannot be created)."""
        if self.base is None:
            return None
        group = self.base / module
        try:
            group.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("%s: cannot create cgroup %s (%s)", module, group, exc)
            return None
        return str(group)

    def pids(self, module: str) -> list[int]:
        """The processes in the module's cgroup now."""
        if self.base is None:
            return []
        try:
            text = (self.base / module / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill(self, module: str) -> list[int]:
        """SIGKILL every process in the module's cgroup; returns their pids."""
        victims = self.pids(module)
        if not victims or self.base is None:
            return []
        switch = self.base / module / "cgroup.kill"
        try:
            switch.write_text("1\n")
        except OSError:  # kernels before 5.14: one by one
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return victims

    def remove(self, module: str) -> None:
        """Kill what is left and remove the module's cgroup (at `down`, or when it is removed)."""
        if self.base is None:
            return
        self.kill(module)
        self._rmdir(self.base / module)

    def close(self) -> None:
        """Remove every module cgroup and our base cgroup."""
        if self.base is None:
            return
        for group in [p for p in self.base.iterdir() if p.is_dir()]:
            self.remove(group.name)
        self._rmdir(self.base)

    @staticmethod
    def _rmdir(group: Path) -> None:
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
