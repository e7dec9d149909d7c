"""The module process's end of the supervisor's lifeline: the read end of a pipe that only the
supervisor holds open for writing and never writes to, so that it reads end-of-file exactly when
the supervisor is gone, however it died.

The module's own code may close that file descriptor (`os.closerange(3, ...)`, as daemonizing
code does) and even get its number back for a file of its own. Each look first checks that the
descriptor is still the pipe it was. Once it is not, the lifeline is lost, and the supervisor is
watched as a process instead: gone when its pid no longer names the process that started when it
was first looked at (whoever our parent is meanwhile: an intermediate of the fork server, or init
where the supervisor is not a subreaper).
"""

from __future__ import annotations

import os
import select
import threading
import time

from module_sdk.process import proc_stat


class Lifeline:
    """Whether the supervisor `supervisor_pid` is gone, from the lifeline `fd` while it is the
    pipe it was (a descriptor that is not open is lost from the start), else from the
    supervisor's process."""

    def __init__(self, fd: int, supervisor_pid: int) -> None:
        self.fd = fd
        self._supervisor = supervisor_pid
        self._lock = threading.Lock()  # the keeper thread and the main thread both look
        self.lost = False
        self._started: int | None = None  # the supervisor's start, once the pipe is lost
        try:
            self._identity = _identity(fd)
        except OSError:
            self._identity = (-1, -1)
            self._lose()

    def gone(self, timeout: float = 0.0) -> bool:
        """Whether the supervisor is gone, waiting up to `timeout` seconds for the pipe to say
        so (lost, it is looked at after that long)."""
        if not self.lost:
            said = self._look(timeout)
            if said is not None:
                return said
            self._lose()
        elif timeout > 0:
            time.sleep(timeout)
        return self._started is None or _started(self._supervisor) != self._started

    def _look(self, timeout: float) -> bool | None:
        """The pipe's answer: True (end-of-file), False (not within `timeout`), None (lost)."""
        try:
            if _identity(self.fd) != self._identity:
                return None
            if not select.select([self.fd], [], [], timeout)[0]:
                return False
            if _identity(self.fd) != self._identity:  # replaced while we waited
                return None
            return not os.read(self.fd, 1)  # nothing is ever written: readable is end-of-file
        except OSError:
            return None

    def _lose(self) -> None:
        with self._lock:
            if not self.lost:
                self._started = _started(self._supervisor)  # None: it is gone already
                self.lost = True


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino


def _started(pid: int) -> int | None:
    """When process `pid` started (with its pid, it names one process, whatever reuses the pid
    later); None if it is gone. A zombie is gone: a killed supervisor stays one until whoever
    adopted it reaps it, which on a busy machine (or under an init that seldom reaps) is not at
    once."""
    stat = proc_stat(pid)
    return None if stat is None or stat.state in ("Z", "X") else stat.start
