"""RSS and CPU of the module processes, sampled by the HTTP thread rather than the supervisor's
loop. Each module's tree is found by what it is made of, never by a walk of every process on
the machine (a scrape on a host with 5,800 processes took 13 s, and sampling each second cost
the supervisor 40% of a core): the module's cgroup when it has one (a small file, as `status`
reads it), else the kernel's lists of children from the module's pid down."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import psutil

from orchestrator.resources import tree_pids

_MB = 1024 * 1024
SAMPLE_EVERY = 2.0  # seconds a sample is served again: the page refreshes every 2 s


class TreeSampler:
    """A psutil handle per module process, so that CPU % has a baseline (the previous sample);
    the samples of the last SAMPLE_EVERY seconds served again, however often it is asked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._clock = clock
        self._last: dict[int, dict[str, float]] = {}
        self._asked: set[int] = set()
        self._taken = -SAMPLE_EVERY

    def sample(self, pids: Iterable[int]) -> dict[int, dict[str, float]]:
        """`{pid: {"rss_mb", "cpu_percent"}}`: memory of each process with its descendants, CPU
        of the process itself since the previous sample; a pid that is gone is left out."""
        wanted = set(pids)
        for gone in set(self._procs) - wanted:
            del self._procs[gone]
        now = self._clock()
        if now - self._taken < SAMPLE_EVERY and wanted <= self._asked:
            return {pid: self._last[pid] for pid in wanted if pid in self._last}
        children: dict[int, list[int]] | None = None  # the whole table, only if it must
        samples = {}
        for pid in wanted:
            try:
                known = self._procs.get(pid)
                if known is None:
                    known = self._procs[pid] = psutil.Process(pid)
                    known.cpu_percent(None)
                cpu = known.cpu_percent(None)
            except psutil.Error:
                self._procs.pop(pid, None)
                continue
            members = tree_pids(pid)
            if members is None:
                children = _process_table() if children is None else children
                members = _walk(pid, children)
            rss = _rss(members)
            samples[pid] = {"rss_mb": round(rss / _MB, 1), "cpu_percent": round(cpu, 1)}
        self._last, self._asked, self._taken = samples, wanted, now
        return samples


def _process_table() -> dict[int, list[int]]:
    """The children of every process (the last resort: a kernel that does not list them)."""
    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        ppid = proc.info.get("ppid")
        if isinstance(ppid, int):
            children.setdefault(ppid, []).append(proc.pid)
    return children


def _walk(root: int, children: dict[int, list[int]]) -> list[int]:
    found, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total
