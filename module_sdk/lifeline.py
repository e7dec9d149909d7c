"""The module process's end of the supervisor's lifeline: the read end of a pipe that only the
supervisor holds open for writing and never writes to, so that it reads end-of-file exactly when
the supervisor is gone, however it died.

The module's own code may close that file descriptor (`os.closerange(3, ...)`, as daemonizing
code does) and even get its number back for a file of its own. Each look first checks that the
descriptor is still the pipe it was; once it is not, the lifeline is lost and the shim watches
its parent process instead (`Lifeline.check` says None).
"""

from __future__ import annotations

import os
import select


class Lifeline:
    """The read end of the lifeline pipe, `fd`; raises OSError if it is not open."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._identity = _identity(fd)

    def check(self, timeout: float = 0.0) -> bool | None:
        """Wait up to `timeout` seconds: True if the supervisor is gone, False if it is not (yet),
        None if the descriptor is no longer the lifeline (closed, or another file now)."""
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


def _identity(fd: int) -> tuple[int, int]:
    status = os.fstat(fd)
    return status.st_dev, status.st_ino
