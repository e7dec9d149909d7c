"""The supervisor's side of a module's limits and isolation (`modules.yaml`, config/limits.py):
what the module process applies to itself (`limits_env`, read by module_sdk/limits.py), access to
the run directory for a module run as another user (`grant_run_dir`), and what `status` says of
each limit: its value and whether the kernel enforces it (`limits_report`).
"""

from __future__ import annotations

import errno
import functools
import grp
import json
import logging
import os
import pwd
from pathlib import Path
from typing import Any

from module_sdk import landlock
from module_sdk.limits import via_run_dir_fd
from orchestrator.acl import grant, granted
from orchestrator.cgroups import ModuleCgroups
from orchestrator.config import ModuleSpec
from orchestrator.config.limits import ModuleLimits

log = logging.getLogger(__name__)

_RUN_DIR_SOCKETS = (
    "child.sock",
    "xsub.sock",
    "xpub.sock",
    "groups.sock",
)  # what a module connects to
_REFRESH = 0.25  # seconds between looks for sockets bound anew


def limits_env(spec: ModuleSpec, run_dir: Path | None) -> str | None:
    """The JSON for module_sdk.limits.ENV_LIMITS, or None when the module sets nothing the
    module process applies itself."""
    limits = spec.limits
    payload: dict[str, Any] = {}
    if limits.rlimits:
        payload["rlimits"] = [list(entry) for entry in limits.rlimits]
    if limits.umask is not None:
        payload["umask"] = limits.umask
    if limits.user is not None or limits.group is not None:
        payload.update(ids(limits))
    if limits.user is not None and run_dir is not None:
        payload["run_dir"] = str(run_dir)
    if limits.filesystem is not None:
        own = spec.path if spec.path.is_dir() else spec.path.parent
        payload["landlock"] = {
            "read_only": [str(own), *map(str, limits.filesystem.read_only)],
            "read_write": [
                *map(str, limits.filesystem.read_write),
                *([str(run_dir)] if run_dir is not None else []),
            ],
        }
    return json.dumps(payload) if payload else None


def bus_endpoint(spec: ModuleSpec, endpoint: str) -> str:
    """The broker's `endpoint` as the module reaches it: through the run directory it holds open
    when it runs as another user (module_sdk.limits.via_run_dir_fd)."""
    return via_run_dir_fd(endpoint) if spec.limits.user is not None else endpoint


def ids(limits: ModuleLimits) -> dict[str, Any]:
    """uid, gid and supplementary groups of the module's `user:` and `group:`: the user's own
    groups, with `group:` (or else the user's primary group) as the primary one. A user or
    group that is gone (removed after the config was loaded, or NSS failing for a moment: sssd,
    LDAP) is an OSError, as any other reason a start cannot go on."""
    try:
        user = pwd.getpwnam(limits.user) if limits.user is not None else None
        group = grp.getgrnam(limits.group).gr_gid if limits.group is not None else None
    except KeyError as exc:  # "getpwnam(): name not found: 'x'"
        raise OSError(errno.ENOENT, str(exc.args[0] if exc.args else exc)) from None
    own = user.pw_gid if user is not None else os.getgid()
    gid = group if group is not None else own
    groups = os.getgrouplist(user.pw_name, gid) if user is not None else [gid]
    return {"uid": user.pw_uid if user is not None else None, "gid": gid, "groups": groups}


def grant_run_dir(run_dir: Path, uid: int) -> None:
    """Let user `uid` reach the module sockets of the owner-only run directory: pass through it
    (not list it) and connect to the child channel and the bus. POSIX ACLs, so nobody else gains
    anything."""
    grant(run_dir, uid, 0o1, default=0o6)
    for name in _RUN_DIR_SOCKETS:
        socket = run_dir / name
        if socket.exists():
            grant(socket, uid, 0o6)


class RunDirGrants:
    """The grants of the module users, kept: a restarted broker binds new sockets, which inherit
    the directory's default ACL masked by its umask (no write, so no connecting); `refresh`
    grants each such socket again, at the loop's next tick."""

    def __init__(self) -> None:
        self._users: dict[Path, set[int]] = {}
        self._next = 0.0

    def add(self, run_dir: Path, uid: int) -> None:
        """Grant `uid` its way to the sockets now, and keep it granted."""
        grant_run_dir(run_dir, uid)
        self._users.setdefault(run_dir, set()).add(uid)

    def refresh(self, now: float) -> None:
        """Grant again what lost its grant (at most every `_REFRESH` seconds): a look at the
        ACL of each socket, since a new one may have the inode number of the one it replaced."""
        if not self._users or now < self._next:
            return
        self._next = now + _REFRESH
        for run_dir, uids in self._users.items():
            for name, uid in ((name, uid) for name in _RUN_DIR_SOCKETS for uid in uids):
                socket = run_dir / name
                try:
                    if granted(socket, uid) != 0o6:
                        grant(socket, uid, 0o6)
                except OSError as exc:  # not bound (yet)
                    log.debug("cannot grant %s: %s", socket, exc)


GRANTS = RunDirGrants()
"""The supervisor's one set of grants (a module's launch adds, the loop's tick refreshes)."""


@functools.cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI (0: none): it does not change while we run."""
    return landlock.abi_version()


def limits_report(
    limits: ModuleLimits, notes: dict[str, str] | None, enforced_by: dict[str, str] | None = None
) -> dict[str, Any]:
    """Each limit the module sets: `{"value": ..., "enforced": bool, "note": why not, or how}`.
    `notes`: why a cgroup limit is not enforced (`ModuleCgroups.notes`), None before its first
    start (then cgroup limits read as not enforced yet); `enforced_by`: how each enforced one
    is ("cgroup v1", "cgroup v2": `ModuleCgroups.enforced_by`)."""
    report: dict[str, Any] = {}
    for key, value in limits.cgroup_keys.items():
        if notes is None:
            report[key] = _entry(value, "not applied yet (the module has not started)")
        elif why := notes.get(key, ""):
            fallback = "; polled instead (memory_limit_mb)" if key == "memory_max_mb" else ""
            report[key] = _entry(value, f"{key} not enforced: {why}{fallback}")
        else:
            how = (enforced_by or {}).get(key)
            report[key] = _entry(value, "", f"enforced ({how})" if how else "")
    if limits.rlimits:
        as_root = limits.user is None and os.geteuid() == 0
        exempt = any(name == "nproc" for name, _, _ in limits.rlimits) and as_root
        report["rlimits"] = _entry(
            {name: [_limit(soft), _limit(hard)] for name, soft, hard in limits.rlimits},
            "rlimits.nproc not enforced: the kernel does not hold root to it (pids_max does)"
            if exempt
            else "",
        )
    for key in ("user", "group"):
        if getattr(limits, key) is not None:
            report[key] = _entry(getattr(limits, key), "")
    if limits.umask is not None:
        report["umask"] = _entry(f"{limits.umask:03o}", "")
    if limits.filesystem is not None:
        access = {
            "read_only": [str(p) for p in limits.filesystem.read_only],
            "read_write": [str(p) for p in limits.filesystem.read_write],
        }
        missing = "filesystem not enforced: no Landlock in this kernel"
        report["filesystem"] = _entry(access, "" if landlock_abi() > 0 else missing)
    return report


def polled_memory_limit(spec: ModuleSpec, cgroups: ModuleCgroups, cgroup: str) -> int | None:
    """The memory limit the supervisor polls for: `memory_limit_mb`, or `memory_max_mb` where
    the kernel cannot enforce it in the module's cgroup (`cgroup`: its key, which a graceful
    restart alternates)."""
    limit = spec.supervision.memory_limit_mb
    kernel = spec.limits.memory_max_mb
    if limit is None and kernel is not None and "memory_max_mb" in cgroups.notes.get(cgroup, {}):
        return kernel
    return limit


def _entry(value: Any, why_not: str, how: str = "") -> dict[str, Any]:
    return {"value": value, "enforced": not why_not, "note": why_not or how}


def _limit(value: int) -> int | str:
    return "unlimited" if value < 0 else value
