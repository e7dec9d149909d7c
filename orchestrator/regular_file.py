"""Opening log files: never blocking on what was put in their place, and telling a directory
that can never take one from a disk that is full for now."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

FILE_MODE = 0o600  # log files are the owner's: output may say more than it should


class NotRegularFileError(OSError):
    """A FIFO, a device, a socket or a symbolic link where a log file should be."""


def open_regular(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """`os.open` of a log file that never blocks: a FIFO or a device put in its place (by a
    module of the same user, say) raises OSError (ENXIO, or NotRegularFileError) instead of
    holding the supervisor's loop until someone reads it. A symbolic link is never followed
    (NotRegularFileError, errno ELOOP): a supervisor running as root would append a module's
    output to whatever file the link names."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFileError(
                errno.ELOOP, "a symbolic link, not followed", str(path)
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


# Errors that mean the directory will never take a log file (a full or failing disk may recover,
# and is counted as lines lost instead).
_NEVER_WRITABLE = (
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOENT,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.ELOOP,
)


def check_writable(path: Path) -> None:
    """Raise OSError if `path` cannot be created or appended to, for a reason that is the
    config's (the directory's permissions, a read-only or pseudo file system)."""
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError as exc:
        if exc.errno in _NEVER_WRITABLE:
            raise
        return
    os.close(fd)
