"""Process-level set-up: parent-death signal, signal wake-ups and prctl; and the
process tree as /proc shows it, to stop and kill whatever a module left behind.

Containment without cgroups rests on two child subreapers: every module process is one for its
own descendants, and the supervisor is one for the module processes. A process can leave its
group, its session and its environment, but not the subtree of its nearest living subreaper
ancestor: while a module process lives, all it started hang below it; when it dies, they hang
below the supervisor. `kill_tree` stops such a subtree before it kills it, so that nothing in it
can fork past the sweep.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterable
from types import FrameType
from typing import NamedTuple

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NAME = 15


def prctl(option: int, value: int | str) -> bool:
    """Call Linux's prctl(2) with an integer or a short string argument; False where it is not
    available or fails."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    argument = ctypes.c_char_p(value.encode()[:15]) if isinstance(value, str) else value
    return bool(libc.prctl(option, argument, 0, 0, 0) == 0)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (a no-op elsewhere).

    The shim also compares `os.getppid()` with the supervisor's pid, which covers other platforms and
    the race where the parent died before this call.
    """
    prctl(PR_SET_PDEATHSIG, sig)


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wake-up fd already carries the signal."""


def run_atexit(timeout: float) -> bool:
    """Run the atexit handlers the module registered, as the end of a Python program would (a
    module process ends with `os._exit`, which runs none); on a thread of their own, so that
    one that hangs holds the stop up for `timeout` seconds at most. False if they had not all
    returned by then."""
    runner = threading.Thread(target=atexit._run_exitfuncs, name="atexit", daemon=True)
    runner.start()
    runner.join(timeout)
    return not runner.is_alive()


class SignalPipe:
    """Signals only wake the main loop: their handlers write to a pipe the loop polls.

    `pending()` returns the signals received since the last call.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self.signals = tuple(signals)
        for sig in self.signals:
            signal.signal(sig, _wake_only)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)  # a spawner may have blocked them

    def close(self) -> None:
        """Restore default handling of the signals and close the pipe."""
        signal.set_wakeup_fd(-1)
        for sig in self.signals:
            signal.signal(sig, signal.SIG_DFL)
        os.close(self.read_fd)
        os.close(self._write_fd)

    def pending(self) -> list[int]:
        """The signal numbers that arrived since the last call, in order."""
        received: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 256)
            except BlockingIOError:
                return received
            if not data:
                return received
            received.extend(data)


class ProcStat(NamedTuple):
    """What /proc/PID/stat says of a process that matters for sweeping it."""

    state: str  # R, S, D, T, Z, ...
    ppid: int
    pgid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, it names one process, whatever comes later


def proc_stat(pid: int) -> ProcStat | None:
    """`pid`'s state, parent, group, session and start; None if it is gone (or there is no
    /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as source:
            data = source.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        state, ppid, pgid, sid, start = fields[0], fields[1], fields[2], fields[3], fields[19]
        return ProcStat(state.decode(), int(ppid), int(pgid), int(sid), int(start))
    except (IndexError, ValueError):
        return None


@functools.cache
def children_listed() -> bool:
    """Whether the kernel lists each thread's children (`/proc/PID/task/TID/children`,
    CONFIG_PROC_CHILDREN): a process's tree is then read from it down, in a few small reads."""
    return os.path.exists("/proc/thread-self/children")  # Linux 3.17+


def children_of(pid: int) -> list[int]:
    """The direct children of `pid`, zombies included: from each of its threads' `children` file
    (a few small reads), or from a scan of every process on kernels without that file."""
    if not children_listed():
        return process_tree().get(pid, [])
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as source:
                found.extend(int(child) for child in source.read().split())
        except OSError:  # that thread has exited
            continue
    return found


def process_tree() -> dict[int, list[int]]:
    """Every process's children, by parent pid: one read of each /proc/PID/stat."""
    tree: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return tree
    for entry in entries:
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            tree.setdefault(stat.ppid, []).append(int(entry))
    return tree


_MAX_ROUNDS = 100  # a tree still growing after this many stop-and-rescan rounds is killed as is


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_tree(roots: Iterable[int], parent: int | None, spare: Collection[int] = ()) -> list[int]:
    """SIGKILL `roots` (children of `parent`; or, with None, processes the caller made sure of)
    and all their descendants but `spare` (and theirs); returns the pids killed.

    Each process is stopped (SIGSTOP) before its children are looked for, top down, and the
    children of every stopped process are listed again until no new one shows: a stopped process
    cannot fork, so nothing escapes between the look and the kill. Before each signal, the
    process's parent is checked again: a parent that is stopped cannot reap it, so its pid cannot
    have been reused meanwhile. Zombies are left to their reaper.
    """
    stopped: list[int] = []
    seen: set[int] = set(spare)
    frontier: list[tuple[int, int | None]] = [(pid, parent) for pid in roots]
    for _ in range(_MAX_ROUNDS):
        for pid, expected in frontier:
            stat = proc_stat(pid)
            if pid in seen or stat is None or stat.state == "Z":
                continue
            if expected is not None and stat.ppid != expected:
                continue
            seen.add(pid)
            if _signal(pid, signal.SIGSTOP):
                stopped.append(pid)
        if not stopped:
            return []
        frontier = [
            (child, pid) for pid in stopped for child in children_of(pid) if child not in seen
        ]
        if not frontier:
            break
    return [pid for pid in stopped if _signal(pid, signal.SIGKILL)]


def kill_descendants(spare: Collection[int] = ()) -> list[int]:
    """SIGKILL every descendant of this process but `spare` (and theirs: see `kill_tree`);
    returns the pids killed. Complete when this process is a child subreaper: orphans of its
    descendants are its own."""
    me = os.getpid()
    return kill_tree(children_of(me), me, spare)


def stop_descendants(grace: float) -> int:
    """SIGTERM every descendant of this process, then wait up to `grace` seconds for them to
    end, reaping those that are its children (it is a subreaper: orphans below come to it);
    returns how many there were. What ignores the signal is left to `kill_descendants`."""
    me = os.getpid()
    found = descendants(me)
    for pid, start in found.items():
        stat = proc_stat(pid)
        if stat is not None and stat.start == start:  # not a pid reused since the listing
            _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while found and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        if not descendants(me):
            break
        time.sleep(0.01)
    return len(found)


def descendants(pid: int, spare: Collection[int] = ()) -> dict[int, int]:
    """Every live descendant of `pid` but `spare` (and theirs), with its start (`ProcStat`)."""
    found: dict[int, int] = {}
    parents = [pid]
    while parents:
        found_now: list[int] = []
        for parent in parents:
            for child in children_of(parent):
                stat = proc_stat(child)
                if child in found or child in spare or stat is None or stat.state == "Z":
                    continue
                if stat.ppid == parent:  # still its child: not a pid reused since the listing
                    found[child] = stat.start
                    found_now.append(child)
        parents = found_now
    return found


def reap_adopted(zombie_since: dict[int, float], now: float, keep: int) -> list[int]:
    """Reap the zombie children this process adopted as a subreaper; returns their pids.

    A child in a session that is neither ours nor its own was started by another process, whose
    death made it ours: it is reaped at once. Any other zombie child may be one that the code
    running here started and will wait for (a `subprocess.Popen` it polls, maybe much later):
    reaping it would make its exit status read 0, so such zombies are left alone, up to `keep`
    of them (a pid each); beyond that, the oldest are reaped, so that a module that never waits
    cannot exhaust the pids. `zombie_since` carries when each zombie was first seen from one
    call to the next.
    """
    me, session = os.getpid(), os.getsid(0)
    reaped: list[int] = []
    zombies: set[int] = set()
    unclaimed: list[tuple[float, int]] = []
    for pid in children_of(me):
        stat = proc_stat(pid)
        if stat is None or stat.state != "Z":
            continue
        zombies.add(pid)
        since = zombie_since.setdefault(pid, now)
        if stat.sid in (session, pid):
            unclaimed.append((since, pid))
        elif _reap(pid):
            reaped.append(pid)
    unclaimed.sort()
    for _, pid in unclaimed[: max(0, len(unclaimed) - keep)]:
        if _reap(pid):
            reaped.append(pid)
    for pid in set(zombie_since) - (zombies - set(reaped)):
        del zombie_since[pid]
    return reaped


def _reap(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # the code that started it reaped it meanwhile
        return False
