"""A process's descendants from the kernel's own lists of children, at a cost that grows with
that tree rather than with every process on the machine (psutil's `children(recursive=True)`
reads the parent of each of them: seconds on a host with thousands)."""

from __future__ import annotations

import functools
import os


@functools.cache
def children_listed() -> bool:
    """Whether this kernel lists each thread's children (`/proc/PID/task/TID/children`, Linux
    3.5+ with CONFIG_PROC_CHILDREN, as in every distribution's kernel)."""
    return os.path.exists("/proc/thread-self/children")


def tree(root: int) -> list[int] | None:
    """`root` and its descendants, `root` first; None if `root` is gone, or if the kernel does
    not list children (see `children_listed`). A process that exits during the walk is left
    out, as are those its children leave behind (adopted by a subreaper, they are no longer
    in the tree)."""
    if not children_listed() or not os.path.isdir(f"/proc/{root}/task"):
        return None
    found, todo, seen = [], [root], {root}
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone since its parent listed it
            continue
        found.append(pid)
        for task in tasks:  # a child belongs to the thread that forked it
            try:
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listed:
                    kids = listed.read().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in seen:
                    seen.add(kid)
                    todo.append(kid)
    return found if found and found[0] == root else None
