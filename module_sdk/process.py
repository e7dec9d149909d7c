"""Process-level set-up: parent-death signal, signal wake-ups, prctl and malloc_trim."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from collections.abc import Iterable
from types import FrameType

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


def release_free_memory() -> bool:
    """Give the heap's free pages back to the system (glibc's malloc_trim); False where there is
    no glibc. glibc keeps what a process freed for reuse, so a long-lived process that parsed and
    imported a lot at start (a supervisor) otherwise holds on to it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:  # musl and other C libraries without it
        return False
    return bool(trim(0))


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (a no-op elsewhere).

    The shim also compares `os.getppid()` with the supervisor's pid, which covers other platforms and
    the race where the parent died before this call.
    """
    prctl(PR_SET_PDEATHSIG, sig)


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wake-up fd already carries the signal."""


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
