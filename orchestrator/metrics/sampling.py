"""RSS and CPU of the module processes, sampled by the HTTP thread rather than the supervisor's
loop: walking every module's process tree costs milliseconds per module (psutil reads /proc for
each), which the loop must not spend on a scrape."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

_MB = 1024 * 1024


class TreeSampler:
    """One pass over the process table per sample, whatever the number of modules; a psutil
    handle per module process, so that CPU % has a baseline (the previous sample)."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pids: Iterable[int]) -> dict[int, dict[str, float]]:
        """`{pid: {"rss_mb", "cpu_percent"}}`: memory of each process with its descendants, CPU
        of the process itself since the previous sample; a pid that is gone is left out."""
        wanted = set(pids)
        for gone in set(self._procs) - wanted:
            del self._procs[gone]
        if not wanted:
            return {}
        children: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            ppid = proc.info.get("ppid")
            if isinstance(ppid, int):
                children.setdefault(ppid, []).append(proc.pid)
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
            rss = _tree_rss(pid, children)
            samples[pid] = {"rss_mb": round(rss / _MB, 1), "cpu_percent": round(cpu, 1)}
        return samples


def _tree_rss(root: int, children: dict[int, list[int]]) -> int:
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
        todo.extend(children.get(pid, ()))
    return total
