"""The lock in a project's logs directory (`logs/.supervisor.lock`): one supervisor per project,
whatever run directory each found (ORCHESTRATOR_RUN_BASE or XDG_RUNTIME_DIR decide that, and they
differ between a shell, cron, sudo and a unit). It holds the holder's pid and run directory."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from orchestrator.rundir import UnsafeRunDirError, lock_exclusive, open_run_file

log = logging.getLogger(__name__)

PROJECT_LOCK = ".supervisor.lock"
_CHECK_EVERY = 1.0  # seconds between looks at the lock file
_ACQUIRE_WAIT = 0.5  # seconds a new supervisor retries a lock held only by a CLI asking


class ProjectTakenError(RuntimeError):
    """Another supervisor holds the lock of this project's logs directory."""


class ProjectLock:
    """The lock this supervisor holds, kept while it runs (`keep`, once a second): a lock file
    removed (`rm -rf logs`) or replaced is made and locked again; else `up` with another run
    directory would start a second supervisor for the project. After a reload that changed
    `logging.directory` (for the next `up`), the new directory's lock is held too (`also_hold`)."""

    def __init__(self, directory: Path, fd: int | None, run_dir: Path) -> None:
        self.directory = directory
        self.fd = fd  # None: not taken yet (a pending directory's)
        self._run_dir = run_dir
        self._checked_at = 0.0  # monotonic
        self._refused = 0  # checks in a row that found the new file locked (said at the 2nd)
        self.pending: ProjectLock | None = None

    def also_hold(self, directory: Path) -> None:
        """Hold the lock of `directory` too: the logs directory a reload set, which applies at
        the next `up`. An `up` through another run directory locks the one the config names,
        and `status` and `down` look there for who runs the project. Our own directory (a
        reload back to it) drops the other one."""
        if self.pending is not None and self.pending.directory != directory:
            self.pending.close()
            self.pending = None
        if self.pending is None and directory != self.directory:
            self.pending = ProjectLock(directory, None, self._run_dir)
            self.pending.check()

    def keep(self, now: float) -> None:
        """Make and lock the lock file again if it is gone or another file (`now` monotonic)."""
        if now < self._checked_at + _CHECK_EVERY:
            return
        self._checked_at = now
        self.check()
        if self.pending is not None:
            self.pending.check()

    def check(self) -> None:
        """Lock the lock file, again if it is gone or another file; never waits."""
        path = self.directory / PROJECT_LOCK
        held = os.fstat(self.fd) if self.fd is not None else None
        try:
            found = os.stat(path)
        except OSError:
            found = None
        if found is not None and held is not None and _same(found, held):
            return
        try:
            self.directory.mkdir(exist_ok=True)  # logs/ itself, never above: a moved project
            fd = _take(self.directory, self._run_dir, wait=0.0)  # the loop never waits
        except ProjectTakenError as exc:
            # Once may be a CLI asking who holds it (a shared lock for a moment): said when
            # it is still so a second later.
            self._refused += 1
            if self._refused == 2 and self.fd is None:
                log.error("the next `up` (with the reloaded logging.directory) fails: %s", exc)
            elif self._refused == 2:
                log.error("%s was replaced, and the new one is locked: %s", path, exc)
            return
        except OSError:  # the project moved or was removed: nothing to lock there
            return
        if fd is None:
            return
        if self.fd is None:
            log.info("%s: locked too, for the logs directory of the next `up`", path)
        else:
            os.close(self.fd)
            log.warning("%s was removed or replaced; made it again and locked it", path)
        self.fd, self._refused = fd, 0

    def close(self) -> None:
        """Drop the lock (the supervisor's last act), and the pending directory's."""
        if self.pending is not None:
            self.pending.close()
        if self.fd is not None:
            os.close(self.fd)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_project(directory: Path, run_dir: Path) -> ProjectLock | None:
    """Take the lock in `directory` (the project's logs directory), writing our pid and
    `run_dir` in it. Returns it, to keep (close-on-exec) while the supervisor runs; None if it
    cannot be made (the logs' own error comes with their first line). Raises ProjectTakenError
    if another supervisor holds it."""
    try:
        fd = _take(directory, run_dir)
    except OSError:
        return None
    return None if fd is None else ProjectLock(directory, fd, run_dir)


def _take(directory: Path, run_dir: Path, wait: float = _ACQUIRE_WAIT) -> int | None:
    """The descriptor of the lock file, locked and written; None if it cannot be made. A lock
    held is retried for `wait` seconds before ProjectTakenError."""
    try:
        fd = open_run_file(directory / PROJECT_LOCK, os.O_RDWR | os.O_CREAT)
    except (OSError, UnsafeRunDirError):
        return None
    try:
        locked = lock_exclusive(fd, wait)  # (`project_holder` locks it shared for a moment)
    except OSError:
        os.close(fd)
        return None
    if not locked:
        pid = _first_line(os.pread(fd, 4096, 0))
        os.close(fd)
        raise ProjectTakenError(
            f"a supervisor (pid {pid or '?'}) already runs with the logs directory {directory}: "
            "this project's, started with another run directory (ORCHESTRATOR_RUN_BASE or "
            "XDG_RUNTIME_DIR differ from its), or another project's using the same logs; stop "
            "it first (`kill -TERM` that pid, or `orchestrator down` where it was started)"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode() + os.fsencode(run_dir) + b"\n", 0)
    return fd


def project_holder(directory: Path) -> tuple[int | None, str] | None:
    """(pid, run directory) that the supervisor holding the lock in `directory` wrote, or None
    if no process holds it. A held lock means a live holder: the lock goes with its last
    descriptor."""
    try:
        fd = open_run_file(directory / PROJECT_LOCK, os.O_RDONLY)
    except (OSError, UnsafeRunDirError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                return None
            pid_line, _, rest = os.pread(fd, 4096, 0).partition(b"\n")
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    pid = pid_line.strip()
    return (int(pid) if pid.isascii() and pid.isdigit() else None), os.fsdecode(
        rest.partition(b"\n")[0]
    )


def _first_line(data: bytes) -> str:
    return data.partition(b"\n")[0].decode(errors="replace").strip()
