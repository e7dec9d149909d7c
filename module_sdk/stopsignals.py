"""The signals that stop a module process: SIGTERM (the supervisor's stop), SIGINT and SIGHUP.

Only these stop it; every other signal is the module's own. The signal wake-up fd gets a byte
for every signal that has a Python-level handler (a module's SIGUSR1 or SIGALRM handler, a
SIGCHLD one), so a byte there only wakes the loop: what says "stop" is the flag our handler sets.

Our handler also writes to our pipe itself, because code in the module may take the wake-up fd
for its own (asyncio's `loop.add_signal_handler` does) and a stop must still arrive. The wake-up
fd is kept for its speed: it wakes the loop at once even when the signal was delivered to
another thread, where a Python handler runs only once the main thread is back in Python.

A process the module forks (`multiprocessing`) inherits the handlers and the wake-up fd: the
at-fork hook here gives such a child the default handling of the stop signals back and detaches
it from our pipe, so that a SIGTERM to it (`Process.terminate()`) ends it, and not the module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopSignals:
    """Installs the handlers of the stop signals and the wake-up fd (on the main thread);
    `read_fd` is readable once a signal has arrived, `requested()` says whether to stop."""

    def __init__(self) -> None:
        global _installed
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.received: int | None = None  # the first stop signal that arrived
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a spawner may have blocked them
        _installed = self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake already
            os.write(self._write_fd, b"\0")

    def requested(self) -> int | None:
        """Empty the pipe; the stop signal that arrived (stop now), or None (another signal woke
        the loop, or none)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass
        return self.received

    def wakeup_fd_taken(self) -> bool:
        """Whether code in the module has replaced our wake-up fd with its own: then theirs is
        left in place, since their signals need it (ours still arrive, through our handler).
        Where nothing replaced it, or it was taken and given up (-1), ours is installed. Call
        on the main thread."""
        previous = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        if previous in (self._write_fd, -1):
            return False
        signal.set_wakeup_fd(previous)
        return True


_installed: StopSignals | None = None
# The signal mask of each thread that is forking, from before the fork until after it.
_forking = threading.local()


def _before_fork() -> None:
    """Block the stop signals in the forking thread until the child has its own handling of
    them: one that arrived in between would run our handler in the child (and be lost there,
    a `Process.terminate()` right after `start()` ignored)."""
    if _installed is not None:
        _forking.mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _after_fork_in_parent() -> None:
    mask = getattr(_forking, "mask", None)
    if mask is not None:
        _forking.mask = None
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _after_fork_in_child() -> None:
    """In a child the module forked: default handling of the stop signals, no wake-up fd of
    ours (one the module installed stays: it is theirs to deal with); then the mask the
    forking thread had, so that a stop signal sent meanwhile takes its default action now."""
    global _installed
    stop, _installed = _installed, None
    mask = getattr(_forking, "mask", None)
    _forking.mask = None
    if stop is None:
        return
    try:
        previous = signal.set_wakeup_fd(-1)
        if previous not in (-1, stop._write_fd):
            signal.set_wakeup_fd(previous)
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) == stop._handle:
                default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
                signal.signal(sig, default)
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
