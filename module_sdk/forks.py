"""Which process this is, kept current across forks: a fork of the module process (a callback
that called `os.fork()`, a `multiprocessing` worker) must not serve the module's bus, whose
ZeroMQ sockets and threads a fork does not carry over.

`pid` is this process's pid, set again by an at-fork hook in every child that `os.fork()` makes
(multiprocessing's fork start method included): the SDK compares it with the pid it recorded
when it set up, at the cost of reading a global (`os.getpid()` is a system call), and finds out
that it is running in a fork.
"""

from __future__ import annotations

import contextlib
import os
from typing import NoReturn

# EX_SOFTWARE: what a fork that returned into the SDK ends with (nothing waits for it but its
# parent, the module process, which reaps it as a subreaper: see module_sdk/process.py).
EXIT_FORKED = 70

pid = os.getpid()


def _forked() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def not_the_owner(owner: int) -> RuntimeError:
    """The error of a call on the event bus of process `owner` from a fork of it (a
    `multiprocessing` worker): the bus's sockets and threads stayed in the module process, and
    an event sent from here would be lost without a word."""
    return RuntimeError(
        f"the event bus belongs to the module process (pid {owner}); this is pid {os.getpid()},"
        " a process it forked (multiprocessing?): publish from the module process (hand it"
        " what to publish over a multiprocessing queue or pipe)"
    )


def end_if_forked(owner: int, where: str) -> None:
    """`end_forked_child` if this is not process `owner`."""
    if pid != owner:
        end_forked_child(owner, where)


def end_forked_child(owner: int, where: str) -> NoReturn:
    """End this process, a fork of process `owner` in which `where` (a callback, say) returned
    into the SDK instead of ending: one line on stderr (the module's log), then `os._exit`, so
    that nothing of the module process's (its bus, its loop, its atexit handlers, the buffers it
    had not flushed when it forked) runs or is written twice."""
    line = (
        f"module_sdk: {where} called os.fork() and returned in the child (pid {os.getpid()}, a"
        f" fork of the module process {owner}); the child ends here: end a forked child with"
        " os._exit(), or start processes with subprocess or multiprocessing\n"
    )
    with contextlib.suppress(OSError):
        os.write(2, line.encode())
    os._exit(EXIT_FORKED)
