"""The end of a module process whose supervisor is gone: `GRACE` seconds for the module's
shutdown(), then whatever the module started is killed, with the module process itself.

The module process does it itself (`Grace`), on a timer, or once shutdown() has returned. But
the module's own code may end that process first (`os._exit()` on a thread, a C extension's
abort, a crash): what it started would then be reparented to init, and live on. So the module
process first starts an undertaker, a small process of its own that outlives it: as soon as the
module process is gone, or `MARGIN` past the grace if it still is not, it kills what is left,
and, last, itself with it. It is bounded: whatever happens, it is gone `_BOUND` seconds past the
grace.

Where the module has a cgroup (v2), that is everything in it: the undertaker writes `cgroup.kill`,
which kills it too. Without one, it is every process that was ever below the module process while
it lived (the undertaker looks every `_LOOK` seconds, and is handed the tree as it was when it was
started), with their descendants, and the module's process group.

The undertaker is a fresh interpreter (`python -I -S`), started with `posix_spawn`: none of the
module's code runs in it (no at-fork handler, no signal handler, no monkeypatching), only the
standard library and `module_sdk.process`. Its command name is `COMM`: a supervisor that kills it
at its next `up` (it is in the module's cgroup) does not count it among what the module left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

from module_sdk.process import (
    PR_SET_NAME,
    descendants,
    kill_descendants,
    kill_tree,
    prctl,
    proc_stat,
)

log = logging.getLogger("module_sdk.shim")

GRACE = 1.5  # an orphaned module gets this long for shutdown() before its tree is killed
MARGIN = 0.5  # past the grace, the module process's own timer goes first
COMM = "orch-undertaker"  # its command name (/proc/PID/comm, 15 characters at most)
_LOOK = 0.05  # seconds between looks at the module process and its tree
_BOUND = 5.0  # past the grace, the undertaker is ended by its own alarm, whatever it is doing
_ROUNDS = 100  # looks at a cgroup's processes where cgroup.kill is missing (Linux < 5.14)
_SDK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # before any chdir
# First, let go of what the module left inheritable (a listening socket, a pipe's write end).
_BOOT = (
    "import os, sys; os.closerange(3, 1 << 20); sys.path.append(sys.argv[1]);"
    " import module_sdk.undertaker as u; u.main()"
)
_HELD = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)  # what a group gets: blocked in it


class Grace:
    """The module process's side: `start()` once its supervisor is gone."""

    def __init__(self, cgroup: Callable[[], str | None]) -> None:
        self._cgroup = cgroup  # the module's cgroup v2 directory, once it joined it
        self._lock = threading.Lock()
        self._started = False
        self.undertaker: int | None = None

    def start(self) -> None:
        """Start the timer that kills everything once the grace is over, and the undertaker as
        soon as there is something for it to kill (the first call only; another returns once
        they are, so that shutdown() may follow)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            # Always, even for a module process that has started nothing: should it hang where
            # no Python runs (C code holding the GIL), only a process of its own can end it.
            # (An alarm instead was tried: a C extension's SIGALRM handler, invisible to
            # getsignal(), or a shutdown() calling alarm(0) disarmed it.)
            self.undertaker = summon(time.monotonic() + GRACE, self._cgroup())
            threading.Timer(GRACE, self.kill_everything).start()

    def kill_everything(self) -> None:
        """Take down all the module started (even `setsid` daemons that cleared their
        environment: as a subreaper, this process has them all below it), its cgroup and its
        process group: this process too, and the undertaker, left running until then, should
        this process die in the middle."""
        sys.stdout.flush()
        sys.stderr.flush()
        kill_descendants(spare=() if self.undertaker is None else (self.undertaker,))
        _kill_last(self._cgroup())


def summon(deadline: float, cgroup: str | None) -> int | None:
    """Start this module process's undertaker, for a grace that ends at `deadline` (monotonic);
    its pid, or None if it cannot be started (the log says so)."""
    tree = descendants(os.getpid())
    try:
        known = os.memfd_create("undertaker", os.MFD_CLOEXEC)
    except OSError:
        known = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    else:
        os.write(known, "".join(f"{pid} {start}\n" for pid, start in tree.items()).encode())
        os.lseek(known, 0, os.SEEK_SET)
    argv = [sys.executable, "-I", "-S", "-c", _BOOT, _SDK_ROOT, str(os.getpid()), repr(deadline)]
    try:
        return os.posix_spawn(
            sys.executable,
            [*argv, cgroup or ""],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, known, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsigmask=_HELD,
            setsigdef=(signal.SIGALRM,),
        )
    except (OSError, ValueError) as exc:  # out of processes (a pids limit), no interpreter...
        log.warning(
            "cannot start an undertaker (%s): if this process dies first, what the "
            "module started may outlive it",
            exc,
        )
        return None
    finally:
        os.close(known)


def is_undertaker(pid: int) -> bool:
    """Whether process `pid` is a module process's undertaker (by its command name)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as source:
            return source.read().strip() == COMM.encode()
    except OSError:
        return False


def main() -> NoReturn:
    """The undertaker process: argv is the module process's pid, the grace's end (monotonic)
    and its cgroup (or ""); stdin, what was below the module process (`PID START` lines)."""
    try:
        prctl(PR_SET_NAME, COMM)
        module, deadline, cgroup = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] or None
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 0.0) + _BOUND)
        known = _read_known()
        me = os.getpid()
        while os.getppid() == module:  # its child until it dies
            known.update(descendants(module, spare=(me,)))
            if time.monotonic() >= deadline + MARGIN:
                break  # still there: its own timer did not kill it
            time.sleep(_LOOK)
        alive = [pid for pid, start in known.items() if _started(pid) == start]
        if os.getppid() == module:
            alive.insert(0, module)
        kill_tree(alive, None, spare=(me,))
        _kill_last(cgroup)
    finally:
        os._exit(0)


def _read_known() -> dict[int, int]:
    chunks = []
    while chunk := os.read(0, 65536):
        chunks.append(chunk)
    known: dict[int, int] = {}
    for line in b"".join(chunks).splitlines():
        with contextlib.suppress(ValueError):
            pid, start = line.split()
            known[int(pid)] = int(start)
    return known


def _started(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat.start if stat is not None and stat.state != "Z" else None


def _kill_last(cgroup: str | None) -> None:
    """SIGKILL what is in `cgroup` and in this process's group, this process with them."""
    if cgroup is not None:
        try:
            with open(os.path.join(cgroup, "cgroup.kill"), "w") as switch:
                switch.write("1\n")
        except OSError:  # before Linux 5.14: one by one
            _kill_members(cgroup)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _kill_members(cgroup: str) -> None:
    me = os.getpid()
    for _ in range(_ROUNDS):
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as procs:
                others = [int(pid) for pid in procs.read().split() if int(pid) != me]
        except (OSError, ValueError):
            return
        if not others:
            return
        kill_tree(others, None, spare=(me,))
