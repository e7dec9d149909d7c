"""Limits and isolation a module process applies to itself before any module code runs.

The supervisor passes them in `ENV_LIMITS` (JSON, see `orchestrator/isolation.py`), and the
module process applies them, in this order, right where it starts (the fork server's child, or
`python -m module_sdk`): join its cgroups (while it may still write there), set its rlimits and
umask, restrict its filesystem with Landlock, then drop to the configured user and group. What
it starts inherits all of it. A limit that cannot be applied stops the module: it must not run
with less isolation than its config asks for (Landlock where the kernel has none excepted; the
supervisor reports that one in `status`).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

from module_sdk import landlock, protocol

ENV_LIMITS = "ORCHESTRATOR_LIMITS"
ENV_CGROUPS_V1 = "ORCHESTRATOR_CGROUPS_V1"  # os.pathsep-separated cgroup v1 directories to join
RUN_DIR_FD = 1000  # where a module run as another user holds the run directory open
EXIT_LIMITS_FAILED = protocol.EXIT_LOAD_FAILED  # reported by the supervisor as a failed load

RLIMITS: dict[str, int] = {
    "as": resource.RLIMIT_AS,
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "fsize": resource.RLIMIT_FSIZE,
    "memlock": resource.RLIMIT_MEMLOCK,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "stack": resource.RLIMIT_STACK,
}

# Beyond the paths the supervisor lists, what a Python module process needs to keep working.
_SYSTEM_READ = (
    "/proc",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/ssl",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
)
_SYSTEM_WRITE = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero", "/dev/shm")


class LimitsError(RuntimeError):
    """A limit could not be applied; the module must not run."""


def apply_from_env() -> None:
    """Apply what `ENV_LIMITS` asks for, if anything, joining the cgroup v1 groups of
    `ENV_CGROUPS_V1` first if it switches user or restricts the filesystem (the shim joins them
    otherwise, before any module code runs); on failure, say why on stderr and exit."""
    raw = os.environ.pop(ENV_LIMITS, None)
    try:
        limits = json.loads(raw) if raw else {}
        if limits.keys() & {"uid", "gid", "landlock"}:
            # Now, while it may write there; else the shim joins while it says hello.
            join_v1(os.environ.pop(ENV_CGROUPS_V1, ""))
        if limits:
            apply(limits)
    except (LimitsError, OSError, ValueError, TypeError, KeyError) as exc:
        name = os.environ.get(protocol.ENV_MODULE, "module")
        print(f"{name}: cannot apply its limits: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_LIMITS_FAILED)


def apply(limits: dict[str, Any]) -> None:
    """Apply `limits` to this process (see the module docstring for the order)."""
    cgroup = os.environ.get(protocol.ENV_CGROUP)
    if cgroup and limits.get("uid") is not None:
        # Joined now, as root; the shim joins again (a no-op the supervisor let the user do).
        Path(cgroup, "cgroup.procs").write_text(f"{os.getpid()}\n")
    if limits.get("run_dir"):
        _hold_run_dir(limits["run_dir"])
    for name, soft, hard in limits.get("rlimits", ()):
        _set_rlimit(name, soft, hard)
    if limits.get("umask") is not None:
        os.umask(int(limits["umask"]))
    access = limits.get("landlock")
    if access is not None and landlock.abi_version() > 0:
        landlock.restrict(
            [*python_paths(), *_SYSTEM_READ, *access["read_only"]],
            [*_SYSTEM_WRITE, *access["read_write"], *([cgroup] if cgroup else [])],
        )
    if limits.get("uid") is not None or limits.get("gid") is not None:
        _become(limits.get("uid"), limits.get("gid"), limits.get("groups"))


def join_v1(groups: str) -> None:
    """Move this process into each cgroup v1 group of `groups` (os.pathsep-separated): the
    kernel enforces the module's limits there (hosts with memory, cpu or pids not on v2)."""
    for group in filter(None, groups.split(os.pathsep)):
        try:
            Path(group, "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            raise LimitsError(f"cannot join cgroup {group}: {exc.strerror or exc}") from None


def via_run_dir_fd(endpoint: str) -> str:
    """`ipc://<run dir>/NAME` as a module run as another user reaches it: through the run
    directory it holds open (`RUN_DIR_FD`), which spares it the search permission on every
    directory above (a user's private runtime directory, often)."""
    if not endpoint.startswith("ipc://"):
        return endpoint
    return f"ipc:///proc/self/fd/{RUN_DIR_FD}/{os.path.basename(endpoint)}"


def _hold_run_dir(run_dir: str) -> None:
    """Open the run directory at `RUN_DIR_FD` (while this process may still reach it) and point
    the child channel there."""
    fd = os.open(run_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fstat(RUN_DIR_FD)
    except OSError:
        pass  # free, as it should be
    else:
        raise LimitsError(f"file descriptor {RUN_DIR_FD} is already in use")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft <= RUN_DIR_FD:
        top = RUN_DIR_FD + 1 if hard == resource.RLIM_INFINITY else max(hard, RUN_DIR_FD + 1)
        resource.setrlimit(resource.RLIMIT_NOFILE, (RUN_DIR_FD + 1, top))
    os.dup2(fd, RUN_DIR_FD, inheritable=False)
    os.close(fd)
    channel = os.environ.get(protocol.ENV_CHANNEL, "")
    os.environ[protocol.ENV_CHANNEL] = via_run_dir_fd(channel)


def python_paths() -> list[str]:
    """What the interpreter and the SDK read: the installation, every import path (but the
    working directory: a module that needs it lists it), module_sdk."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    here = os.getcwd()  # first on sys.path, but only as a place to import from, not to read
    paths.update(p for p in sys.path if p and os.path.abspath(p) != here)
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(protocol.__file__))))
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted(paths)


def _set_rlimit(name: str, soft: int, hard: int) -> None:
    if name not in RLIMITS:
        raise LimitsError(f"unknown rlimit {name!r}")
    infinity = resource.RLIM_INFINITY
    value = (infinity if soft < 0 else soft, infinity if hard < 0 else hard)
    try:
        resource.setrlimit(RLIMITS[name], value)
    except (ValueError, OSError) as exc:
        raise LimitsError(f"rlimits.{name} {list(value)}: {exc}") from None


def _become(uid: int | None, gid: int | None, groups: list[int] | None) -> None:
    """Drop to `gid` (with `groups` as the supplementary ones) and `uid`, for good."""
    if gid is not None:
        os.setgroups(groups if groups is not None else [gid])
        os.setresgid(gid, gid, gid)
    if uid is not None:
        os.setresuid(uid, uid, uid)
        if os.geteuid() != uid or os.getuid() != uid:
            raise LimitsError(f"still uid {os.getuid()} after switching to {uid}")
