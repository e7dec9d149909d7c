"""Process and thread limits derived from the machine, and the usage the supervisor logs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

import psutil

from module_sdk.process import children_listed, descendants, proc_stat
from orchestrator.cgroups import MODULE_CGROUPS_PREFIX, cgroup2_mount, cgroup_of
from orchestrator.config import ResourcesSection
from orchestrator.fd_budget import files_needed, open_files_limit, processes_within

log = logging.getLogger(__name__)
_MB = 1024 * 1024
_PPM = 1_000_000


@dataclass(frozen=True)
class Limits:
    """What the supervisor may start: `max_processes` module processes (set by "memory" or by
    the config's "max_processes": `bound_by`), `max_threads` threads; and no more processes than
    its own `open_files` limit holds (`process_limit`, see fd_budget)."""

    max_processes: int
    max_threads: int
    available_mb: int
    total_mb: int
    cpu_count: int
    open_files: int | None = None
    bound_by: str = "memory"

    def process_limit(self, modules: int) -> tuple[int, str]:
        """The module processes that may run with `modules` modules (or instances) in the
        config, and what sets that: `bound_by`, or "open files"."""
        if self.open_files is not None:
            held = processes_within(self.open_files, modules)
            if held < self.max_processes:
                return held, "open files"
        return self.max_processes, self.bound_by

    def as_dict(self, modules: int | None = None) -> dict[str, Any]:
        """The limits, with the process limit for `modules` modules when given."""
        found = asdict(self)
        if modules is not None:
            found["max_processes"], found["bound_by"] = self.process_limit(modules)
        return found

    def reached(self, modules: int) -> str:
        """Why a module waits at the process limit."""
        limit, bound_by = self.process_limit(modules)
        if bound_by == "open files":
            return (
                f"process limit reached ({limit} module processes: all that the open-files"
                f" limit {self.open_files} holds; {files_needed(limit + 1, modules)} would hold"
                " one more)"
            )
        return f"process limit reached ({limit} module processes)"


def compute_limits(
    settings: ResourcesSection,
    *,
    available_bytes: int,
    total_bytes: int,
    cpu_count: int,
    open_files: int | None = None,
) -> Limits:
    """`available RAM x (1 - reserved_ram_percent) / process_memory_mb` processes (at least 1, and no
    more than an explicit `max_processes`), and `cpu_count x thread_per_core` threads."""
    # Integer arithmetic in parts per million: 10 GiB x (1 - 0.8) / 512 MB is 4, where floats
    # say 3.999...
    kept_ppm = _PPM - round(settings.reserved_ram_percent * _PPM)
    processes = max(1, available_bytes * kept_ppm // (_PPM * _MB * settings.process_memory_mb))
    bound_by = "memory"
    if settings.max_processes is not None and settings.max_processes < processes:
        processes, bound_by = settings.max_processes, "max_processes"
    return Limits(
        max_processes=processes,
        max_threads=max(1, cpu_count * settings.thread_per_core),
        available_mb=available_bytes // _MB,
        total_mb=total_bytes // _MB,
        cpu_count=cpu_count,
        open_files=open_files,
        bound_by=bound_by,
    )


def grant_threads(max_threads: int, asked: Mapping[str, int]) -> dict[str, int]:
    """The callback threads each module gets, of the `concurrency` it `asked` (module -> threads,
    in config order), so that together they stay within `max_threads`: each gets 1 whatever
    the limit (one thread is how a module runs at all), and the threads left over go one at a
    time to each module still short, in turn (max-min fair: a module asking many cannot starve
    one asking a few). Pure: it depends on the config and the limit, not on what runs now."""
    granted = dict.fromkeys(asked, 1)
    spare = max_threads - len(granted)
    short = [name for name, want in asked.items() if want > 1]
    while spare > 0 and short:
        for name in list(short):
            if spare == 0:
                break
            granted[name] += 1
            spare -= 1
            if granted[name] >= asked[name]:
                short.remove(name)
    return granted


def machine_limits(settings: ResourcesSection) -> Limits:
    """`compute_limits` for this machine, now."""
    memory = psutil.virtual_memory()
    return compute_limits(
        settings,
        available_bytes=memory.available,
        total_bytes=memory.total,
        cpu_count=psutil.cpu_count() or 1,
        open_files=open_files_limit(),
    )


class ProcessSampler:
    """RSS and CPU of module processes; keeps one psutil handle per pid so CPU % has a baseline."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pid: int) -> dict[str, float]:
        """`{"rss_mb", "cpu_percent"}` of `pid`: memory with its descendants, CPU of the process
        itself since the previous sample; {} if it is gone."""
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(None)
            cpu = proc.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return {}
        rss = self.tree_rss_mb(pid)
        return {} if rss is None else {"rss_mb": round(rss, 1), "cpu_percent": round(cpu, 1)}

    def tree_rss_mb(self, pid: int) -> float | None:
        """Resident memory of `pid` and all its descendants, in MB; None if it is gone."""
        procs = _tree(pid)
        return None if procs is None else _total(procs, _rss) / _MB

    def tree_memory_mb(self, pid: int, limit: float | None = None) -> float | None:
        """The memory `pid` and all its descendants use, in MB, as a memory limit counts it:
        their RSS if it is one process; else their PSS, in which a page they share (a fork's
        copy-on-write pages) counts once, not once per process; None if it is gone. With
        `limit`: their RSS while it is within it (RSS is never less than PSS, and costs a tenth
        as much to read: smaps_rollup walks every mapping)."""
        procs = _tree(pid)
        if procs is None:
            return None
        rss = _total(procs, _rss) / _MB
        if len(procs) == 1 or (limit is not None and rss <= limit):
            return rss
        return _total(procs, _pss) / _MB

    def forget(self, pid: int) -> None:
        """Drop the handle of a process that has exited."""
        self._procs.pop(pid, None)


def tree_pids(pid: int) -> list[int] | None:
    """`pid` and its descendants, found from `pid` down, never by a walk of every process on the
    machine (seconds on a host with thousands): its module cgroup's processes (a small file),
    else the kernel's lists of children; None if neither can be read, or `pid` is gone."""
    in_cgroup = module_cgroup_pids(pid)
    if in_cgroup is not None and pid in in_cgroup:
        return [pid, *(p for p in in_cgroup if p != pid)]
    if not children_listed() or proc_stat(pid) is None:
        return None
    return [pid, *descendants(pid)]


def _tree(pid: int) -> list[psutil.Process] | None:
    """`pid` and its descendants (see `tree_pids`; psutil's walk of every process on a kernel
    that lists no children); None if `pid` is gone. One that ends meanwhile is left out."""
    try:
        root = psutil.Process(pid)
        pids = tree_pids(pid)
        if pids is None:
            return [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    procs = [root]
    for other in pids[1:]:
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(other))
    return procs


def _total(procs: list[psutil.Process], measure: Callable[[psutil.Process], int]) -> int:
    total = 0
    for proc in procs:
        try:
            total += measure(proc)
        except psutil.Error:
            continue
    return total


def _rss(proc: psutil.Process) -> int:
    return int(proc.memory_info().rss)


def _pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss)
    except psutil.AccessDenied:  # another user's process (a module run as one): its RSS
        return int(proc.memory_info().rss)


def module_cgroup_pids(pid: int) -> list[int] | None:
    """The processes of the module cgroup `pid` is in (`.../orchestrator-<key>/<module>`, made
    by `cgroups.ModuleCgroups`), or None if it is in no such cgroup (or it cannot be read)."""
    group = cgroup_of(pid)
    root = _cgroup2_mount()
    if group is None or root is None:
        return None
    path = PurePosixPath(group)
    if not path.parent.name.startswith(MODULE_CGROUPS_PREFIX):
        return None
    try:
        text = (root / path.relative_to("/") / "cgroup.procs").read_text()
    except (OSError, ValueError):
        return None
    return [int(p) for p in text.split()]


_cgroup2_mount = functools.cache(cgroup2_mount)  # the supervisor's mounts do not change


def memory_reserve_shortfall(settings: ResourcesSection) -> str | None:
    """Why no module may start now for lack of memory (available RAM under the reserved share of
    the total), or None when there is room."""
    memory = psutil.virtual_memory()
    reserve = memory.total * settings.reserved_ram_percent
    if memory.available >= reserve:
        return None
    return (
        f"available memory {memory.available // _MB} MB is under the reserve "
        f"{int(reserve // _MB)} MB (reserved_ram_percent {settings.reserved_ram_percent:g})"
    )


def system_usage() -> dict[str, Any]:
    """Machine-wide CPU and memory use, for the periodic usage line and `resources.usage`."""
    memory = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(None),
        "memory_percent": memory.percent,
        "available_mb": memory.available // _MB,
    }


class _OwnUsage:
    """This process's CPU over windows of a second or more: a status asked right after another
    (the metrics endpoint and a cluster bridge ask every second) keeps the last figure rather
    than divide a clock tick or two by a few milliseconds."""

    WINDOW = 1.0  # seconds

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.since: tuple[float, float] | None = None  # (monotonic, CPU seconds) of the window
        self.percent = 0.0

    def cpu_percent(self, cpu_seconds: float) -> float:
        now = time.monotonic()
        if self.since is None:
            self.since = (now, cpu_seconds)
        elif now - self.since[0] >= self.WINDOW:
            self.percent = (cpu_seconds - self.since[1]) / (now - self.since[0]) * 100
            self.since = (now, cpu_seconds)
        return self.percent


_own: list[_OwnUsage] = []


def own_usage() -> dict[str, float]:
    """This process's RSS and CPU (% of one core over the last window of a second or more
    between two calls; 0.0 until there is one): what the supervisor costs, the output of every
    module it reads included."""
    if not _own or _own[0].process.pid != os.getpid():  # made in a process we were forked from
        _own[:] = [_OwnUsage()]
    own = _own[0]
    try:
        with own.process.oneshot():
            rss, times = own.process.memory_info().rss, own.process.cpu_times()
    except psutil.Error:
        return {}
    return {
        "rss_mb": round(rss / _MB, 1),
        "cpu_percent": round(own.cpu_percent(times.user + times.system), 1),
    }


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_ALLOCATION = 1 << 20  # bytes from which every allocation is a mapping of its own


def _glibc(function: str) -> Any:
    """glibc's `function` in this process, or None (not Linux, or musl and other C libraries
    without it)."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None), function, None)


def keep_large_allocations_apart() -> bool:
    """Have glibc serve every allocation of `LARGE_ALLOCATION` or more with a mapping of its own,
    given back to the system when freed. Otherwise glibc raises that threshold to the largest
    block freed so far (up to 32 MiB), and a peer's stream of large messages (a child channel
    message may be 16 MiB) grows the heap by hundreds of MB, kept after the flood: 0.9-1.2 GB
    for one connection, 0.25 GB with this. False where there is no glibc."""
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION))


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim); False where there is
    no glibc. glibc keeps what a process freed for reuse, so a long-lived process that parsed and
    imported a lot at start (a supervisor) otherwise holds on to it."""
    trim = _glibc("malloc_trim")
    return trim is not None and bool(trim(0))
