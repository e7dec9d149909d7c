"""Containment of each module's process tree in a cgroup v2, where one is mounted and writable,
and its kernel-enforced limits there, or on cgroup v1 for a controller v2 lacks (cgroup_v1.py).

A process cannot leave its cgroup by forking, `setsid` or clearing its environment, so killing a
module's cgroup kills everything it started. Where cgroup v2 is not available (or not ours to
write), `available()` is False and containment rests on subreapers: each module process is one for
its descendants, and the supervisor for the module processes (module_sdk/process.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
from pathlib import Path

from module_sdk.limits import ENV_CGROUPS_V1
from module_sdk.undertaker import is_undertaker
from orchestrator.cgroup_limits import (
    CONTROLLERS,
    delegate,
    make_base,
    oom_kills,
    remove_group,
    write_limits,
)
from orchestrator.cgroup_v1 import MECHANISM as V1
from orchestrator.cgroup_v1 import PREFIX, V1Cgroups, sweep
from orchestrator.config.limits import ModuleLimits

log = logging.getLogger(__name__)

V2 = "cgroup v2"
MODULE_CGROUPS_PREFIX = PREFIX  # <our cgroup>/orchestrator-<key>/<module>


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

    def __init__(
        self, key: str, root: Path | None = None, v1_mounts: dict[str, Path] | None = None
    ) -> None:
        """`root`: where our cgroup v2 is (else found); `v1_mounts`: the cgroup v1 hierarchy of
        each controller (else found in /proc/self/mountinfo)."""
        self.base: Path | None = None
        self.notes: dict[str, dict[str, str]] = {}  # module -> limit key -> why not enforced
        self.enforced_by: dict[str, dict[str, str]] = {}  # module -> limit key -> V1 or V2
        self._key = key
        self._v1: V1Cgroups | None = None  # made at first need, for the controllers v2 lacks
        self._v1_groups: dict[str, list[str]] = {}  # module -> the v1 groups it joins
        self._oom_kills: dict[str, int] = {}  # module -> its memory.events oom_kill count seen
        self._delegated: tuple[frozenset[str], str] | None = None  # see controllers()
        self._v1_mounts = v1_mounts
        sweep(key, v1_mounts)  # what a SIGKILLed supervisor left on cgroup v1
        root = root or cgroup2_root()
        self._root = root
        if root is None:
            return
        base = root / f"{MODULE_CGROUPS_PREFIX}{key}"
        try:
            make_base(base)
        except OSError as exc:
            log.debug("cgroup v2 at %s is not writable here (%s); using process groups", root, exc)
            with contextlib.suppress(OSError):
                base.rmdir()
            return
        self.base = base
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Kill what a killed supervisor's modules left in their cgroups (a module that died
        without taking down what it started: `os._exit` in its shutdown(), or SIGKILLed with
        it). The run directory's lock is ours: nothing in these cgroups is of a live run. A
        module process's undertaker, still at work, goes too, but is not the module's doing."""
        assert self.base is not None
        with contextlib.suppress(OSError):
            for group in sorted(p for p in self.base.iterdir() if p.is_dir()):
                ours = {pid for pid in self.pids(group.name) if is_undertaker(pid)}
                killed = [pid for pid in self.kill(group.name) if pid not in ours]
                if killed:
                    log.warning(
                        "%s: killed %d process(es) an earlier run left in its cgroup (pids %s)",
                        group.name,
                        len(killed),
                        " ".join(map(str, killed[:10])),
                    )

    def available(self) -> bool:
        return self.base is not None

    def prepare(self, module: str, limits: ModuleLimits | None = None) -> str | None:
        """Create the module's cgroup and write its limits there (what could not be enforced is
        in `notes[module]`, what is in `enforced_by[module]`); the module process joins it
        itself, at its start, before any module code runs. None without cgroup v2 (or if it
        cannot be created); the cgroup v1 groups it joins are in `env(module)`."""
        limits = limits or ModuleLimits()
        self.notes[module] = self._prepare_v2(module, limits)
        self.enforced_by[module] = {key: V2 for key in limits.cgroup_keys}
        self._prepare_v1(module, limits)
        for key in self.notes[module]:
            self.enforced_by[module].pop(key, None)
        for key, why in self.notes[module].items():
            log.warning("%s: %s not enforced: %s", module, key, why)
        group = self.base / module if self.base is not None else None
        return str(group) if group is not None and group.is_dir() else None

    def env(self, module: str) -> dict[str, str]:
        """What the module process's environment needs to join its cgroup v1 groups."""
        groups = self._v1_groups.get(module)
        return {ENV_CGROUPS_V1: os.pathsep.join(groups)} if groups else {}

    def _prepare_v2(self, module: str, limits: ModuleLimits) -> dict[str, str]:
        if self.base is None:
            return {key: "no writable cgroup v2" for key in limits.cgroup_keys}
        group = self.base / module
        try:
            group.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("%s: cannot create cgroup %s (%s)", module, group, exc)
            return {key: f"cannot create its cgroup: {exc}" for key in limits.cgroup_keys}
        notes = write_limits(group, limits, self.controllers(bool(limits.cgroup_keys)))
        self._oom_kills[module] = oom_kills(group)
        if limits.user is not None:  # it joins as root, then again as itself: let it
            with contextlib.suppress(OSError, KeyError):
                os.chown(group / "cgroup.procs", pwd.getpwnam(limits.user).pw_uid, -1)
        return notes

    def _prepare_v1(self, module: str, limits: ModuleLimits) -> None:
        """Enforce on cgroup v1 what v2 cannot (once anything asks for it)."""
        self._v1_groups.pop(module, None)
        if self._v1 is None and limits.cgroup_keys:
            lacking = frozenset(CONTROLLERS.values()) - self.controllers()[0]
            self._v1 = V1Cgroups(self._key, lacking, self._v1_mounts) if lacking else None
        if self._v1 is None:
            return
        notes = self.notes[module]
        v1_notes = self._v1.prepare(module, limits) if self._v1.bases else {}
        self._v1_groups[module] = [str(group) for group in self._v1.groups(module)]
        for key in [key for key in notes if CONTROLLERS[key] in self._v1.bases]:
            if key in v1_notes:
                notes[key] = f"{notes[key]}; {v1_notes[key]}"
            else:
                del notes[key]
                self.enforced_by[module][key] = V1
        for key in notes:  # neither v2 nor a v1 hierarchy: say why not for both
            controller = CONTROLLERS[key]
            if controller in self._v1.why and self._v1.why[controller] not in notes[key]:
                notes[key] = f"{notes[key]}; {self._v1.why[controller]}"

    def controllers(self, wanted: bool = True) -> tuple[frozenset[str], str]:
        """The controllers (of memory, cpu, pids) that module cgroups have, and why the others
        are missing. Enabled on first need: in our cgroup and in the base, which the kernel
        refuses in a cgroup that holds processes (but the root): run the supervisor alone in a
        delegated cgroup (systemd `Delegate=yes`) for them."""
        if self._delegated is None and self.base is not None and self._root and wanted:
            leaf = self._root / f"{self.base.name}.supervisor"
            self._delegated = delegate(self._root, self.base, leaf)
        return self._delegated or (frozenset(), "no writable cgroup v2")

    def oom_killed(self, module: str, wait_status: int) -> bool:
        """Whether the module process, reaped with `wait_status`, was killed by the kernel's
        OOM killer: SIGKILLed, with an OOM kill in its cgroup since it started (at memory.max,
        or memory.limit_in_bytes on cgroup v1)."""
        v1 = self._v1 is not None and self._v1.oom_killed(module)
        v2 = False
        if self.base is not None:
            seen = self._oom_kills.get(module, 0)
            now = oom_kills(self.base / module)
            self._oom_kills[module] = now
            v2 = now > seen
        killed = os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) == signal.SIGKILL
        return killed and (v1 or v2)

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
        """SIGKILL every process in the module's cgroup (and its cgroup v1 groups); returns
        their pids."""
        strays = self._v1.kill(module) if self._v1 is not None else []
        victims = self.pids(module)
        if not victims or self.base is None:
            return strays
        switch = self.base / module / "cgroup.kill"
        try:
            switch.write_text("1\n")
        except OSError:  # kernels before 5.14: one by one
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return sorted(set(victims) | set(strays))

    def remove(self, module: str) -> None:
        """Kill what is left and remove the module's cgroup (at `down`, or when it is removed)."""
        if self._v1 is not None:
            self._v1.remove(module)
        if self.base is None:
            return
        self.kill(module)
        remove_group(self.base / module)

    def close(self) -> None:
        """Remove every module cgroup and our base cgroup."""
        if self._v1 is not None:
            self._v1.close()
        sweep(self._key, self._v1_mounts)
        if self.base is None:
            return
        for group in [p for p in self.base.iterdir() if p.is_dir()]:
            self.remove(group.name)
        remove_group(self.base)
        if self._root is not None:  # where the supervisor moved to delegate: empty once it exits
            with contextlib.suppress(OSError):
                (self._root / f"{self.base.name}.supervisor").rmdir()
