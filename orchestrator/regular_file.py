"""Opening a log file without ever blocking on what was put in its place."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

FILE_MODE = 0o600  # log files are the owner's: output may say more than it should


class NotRegularFileError(OSError):
    """A FIFO, a device or a socket where a log file should be."""


def open_regular(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """`os.open` of a log file that never blocks: a FIFO or a device put in its place (by a
    module of the same user, say) raises OSError (ENXIO, or NotRegularFileError) instead of
    holding the supervisor's loop until someone reads it."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
