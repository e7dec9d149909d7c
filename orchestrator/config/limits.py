"""A module's resource limits and isolation in `modules.yaml`: validated here, applied by the
supervisor (cgroup v2 files, or v1 ones: orchestrator/cgroups.py) and by the module process
itself before any module code runs (rlimits, umask, Landlock, user and group:
module_sdk/limits.py).

```yaml
- name: worker
  path: worker.py
  memory_max_mb: 256          # cgroup memory.max: the kernel kills the module past it
  cpu_quota: 0.5              # cgroup cpu.max: half a core
  pids_max: 64                # cgroup pids.max: forks past it fail
  rlimits: {nofile: 256, core: 0, as: [1000000000, unlimited]}
  user: nobody                # run as another user (the supervisor must run as root)
  group: nogroup
  umask: "027"
  filesystem: {read_only: [/srv/data], read_write: [/var/lib/worker]}   # Landlock
```
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
from pathlib import Path
from typing import Any

from module_sdk.limits import RLIMITS
from orchestrator.config.errors import ConfigError
from orchestrator.config.validate import (
    check_keys,
    child,
    describe,
    expect_list,
    expect_mapping,
    expect_number,
    expect_optional_int,
    expect_str,
    item,
)
from orchestrator.record import record

# RLIMITS (module_sdk.limits, which applies them in the module process): the rlimits a module
# entry may set, by the name `ulimit` and prlimit(1) use.

UNLIMITED = -1  # RLIM_INFINITY, as `rlimits` values carry it
_RLIMIT_MAX = 2**63 - 1  # what setrlimit() takes below RLIM_INFINITY
LIMIT_KEYS = (
    "memory_max_mb",
    "cpu_quota",
    "pids_max",
    "rlimits",
    "user",
    "group",
    "umask",
    "filesystem",
)
"""The keys of a module entry that this file validates."""


@record
class FilesystemAccess:
    """`filesystem:` the paths a module may read (and execute) and those it may also write;
    everything else is out of reach (Landlock), but for what the module process itself needs."""

    read_only: tuple[Path, ...] = ()
    read_write: tuple[Path, ...] = ()


@record
class ModuleLimits:
    """A module's limits and isolation; every field None (or empty) means: not set."""

    memory_max_mb: int | None = None
    cpu_quota: float | None = None  # a fraction of one core (2.0: two cores)
    pids_max: int | None = None
    rlimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard), UNLIMITED for none
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    filesystem: FilesystemAccess | None = None

    @property
    def cgroup_keys(self) -> dict[str, int | float]:
        """The limits that only a cgroup enforces, by key, as set."""
        values = {
            "memory_max_mb": self.memory_max_mb,
            "cpu_quota": self.cpu_quota,
            "pids_max": self.pids_max,
        }
        return {key: value for key, value in values.items() if value is not None}


def build_limits(entry: dict[str, Any], file: str, where: str, modules_dir: Path) -> ModuleLimits:
    """The limit keys of one module entry (the others are checked elsewhere)."""
    user, group = entry.get("user"), entry.get("group")
    filesystem = entry.get("filesystem")
    limits = ModuleLimits(
        memory_max_mb=expect_optional_int(
            entry.get("memory_max_mb"), file, child(where, "memory_max_mb"), minimum=1
        ),
        cpu_quota=_cpu_quota(entry.get("cpu_quota"), file, child(where, "cpu_quota")),
        pids_max=expect_optional_int(
            entry.get("pids_max"), file, child(where, "pids_max"), minimum=1
        ),
        rlimits=_rlimits(entry.get("rlimits"), file, child(where, "rlimits")),
        user=_user(user, file, child(where, "user")) if user is not None else None,
        group=_group(group, file, child(where, "group")) if group is not None else None,
        umask=_umask(entry.get("umask"), file, child(where, "umask")),
        filesystem=_filesystem(filesystem, file, child(where, "filesystem"), modules_dir)
        if filesystem is not None
        else None,
    )
    if (limits.user is not None or limits.group is not None) and os.geteuid() != 0:
        key = "user" if limits.user is not None else "group"
        raise ConfigError(
            file,
            child(where, key),
            f"running a module as another {key} needs the supervisor to run as root "
            f"(it runs as uid {os.geteuid()})",
        )
    return limits


def _cpu_quota(value: Any, file: str, where: str) -> float | None:
    if value is None:
        return None
    quota = expect_number(value, file, where, gt=0)
    if quota * 100_000 < 1000:  # cpu.max takes a quota of at least 1 ms per 100 ms
        raise ConfigError(file, where, f"expected a fraction of a core >= 0.01, got {value!r}")
    return quota


def _rlimit_value(value: Any, file: str, where: str) -> int:
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _RLIMIT_MAX:
        raise ConfigError(
            file,
            where,
            f"expected an integer between 0 and {_RLIMIT_MAX} or 'unlimited', got {describe(value)}",
        )
    return value


def _rlimits(value: Any, file: str, where: str) -> tuple[tuple[str, int, int], ...]:
    """`{name: value}` or `{name: [soft, hard]}`; a single value sets both."""
    raw = expect_mapping(value, file, where, allow_null=True)
    result: list[tuple[str, int, int]] = []
    for name, setting in raw.items():
        at = child(where, name)
        if name not in RLIMITS:
            raise ConfigError(
                file, at, f"unknown rlimit {describe(name)}; expected one of {', '.join(RLIMITS)}"
            )
        if isinstance(setting, list):
            if len(setting) != 2:
                raise ConfigError(
                    file, at, f"expected [soft, hard], got a list of {len(setting)} items"
                )
            soft = _rlimit_value(setting[0], file, item(at, 0))
            hard = _rlimit_value(setting[1], file, item(at, 1))
        else:
            soft = hard = _rlimit_value(setting, file, at)
        if hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
            raise ConfigError(file, at, f"the soft limit {setting[0]!r} exceeds the hard limit")
        result.append((name, soft, hard))
    return tuple(result)


def _user(value: Any, file: str, where: str) -> str:
    """A user name or uid that exists on this host."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        try:
            return pwd.getpwuid(value).pw_name
        except KeyError:
            raise ConfigError(file, where, f"no user with uid {value} on this host") from None
    name = expect_str(value, file, where, allow_empty=False)
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(file, where, f"no user {describe(name)} on this host") from None
    return name


def _group(value: Any, file: str, where: str) -> str:
    """A group name or gid that exists on this host."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        try:
            return grp.getgrgid(value).gr_name
        except (KeyError, OverflowError):  # a gid past the C type: no such group either
            raise ConfigError(file, where, f"no group with gid {value} on this host") from None
    name = expect_str(value, file, where, allow_empty=False)
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ConfigError(file, where, f"no group {describe(name)} on this host") from None
    return name


def _umask(value: Any, file: str, where: str) -> int | None:
    """Octal digits, as systemd's UMask= reads them: `"027"`, `27` or `0o27` (the loader keeps
    an unquoted umask's text, `MODULES_AS_TEXT`). An integer can only be one YAML already read
    as decimal or octal, which cannot be told apart: it is refused."""
    if value is None:
        return None
    number = -1
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = int(value, 8)
    if not 0 <= number <= 0o777:
        raise ConfigError(
            file, where, f"expected an octal umask such as '027' (0 to 777), got {describe(value)}"
        )
    return number


def _filesystem(value: Any, file: str, where: str, modules_dir: Path) -> FilesystemAccess:
    raw = expect_mapping(value, file, where)
    check_keys(raw, ("read_only", "read_write"), file, where)
    paths: dict[str, tuple[Path, ...]] = {}
    for key in ("read_only", "read_write"):
        at = child(where, key)
        entries = expect_list(raw.get(key), file, at, allow_null=True)
        paths[key] = tuple(
            (modules_dir / expect_str(path, file, item(at, index), allow_empty=False)).resolve()
            for index, path in enumerate(entries)
        )
    return FilesystemAccess(read_only=paths["read_only"], read_write=paths["read_write"])
