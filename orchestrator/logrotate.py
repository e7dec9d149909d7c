"""What becomes of a log file that is full or a day old: `app.log` is renamed `app.log.1` (older
ones shift up to `app.log.<backup_count>`, as logging's RotatingFileHandler names them), gzipped to
`app.log.1.gz` with `logging.compress: gzip`, and rotated files older than `logging.max_age` are
deleted.

The loop that writes the file only renames it. Without compression, the numbered files are
shifted there and then (a few renames). With it, the full file is renamed to a pending name
(`app.log.<ns>.rotating`) and one background thread, the same for every log file, shifts,
compresses and prunes: one job after the other, so two rotations of one file never race, and a
large file never holds up the loop. A file that fills faster than gzip packs it would pile pending
files up without end: beyond `backup_count` of them waiting, the oldest are deleted uncompressed
(they would be shifted away anyway). What a supervisor that died left half done (a pending file, a
partial `.gz.tmp`) is finished when the file is next opened, its surplus deleted likewise.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from datetime import time as day_start
from functools import partial
from pathlib import Path

from orchestrator.config import LoggingSection
from orchestrator.record import record
from orchestrator.regular_file import open_regular

PENDING = ".rotating"  # suffix of a file renamed aside, waiting for the background thread
_PARTIAL = ".tmp"  # suffix of a `.gz` being written
_EXIT_WAIT = 5.0  # seconds a finishing supervisor waits for pending compressions

log = logging.getLogger(__name__)


@record
class Rotation:
    """When a log file rotates and what becomes of the rotated files. `backup_count` 0 means
    never rotate (the file grows); `max_bytes` 0 means not by size."""

    max_bytes: int = 0
    backup_count: int = 0
    daily: bool = False  # also at local midnight (at the first line written after it)
    max_age: float | None = None  # seconds: rotated files older than this are deleted
    compress: bool = False  # gzip rotated files, off the loop

    @classmethod
    def from_settings(cls, settings: LoggingSection) -> Rotation:
        return cls(
            max_bytes=int(settings.max_file_size_mb * 1024 * 1024),
            backup_count=settings.backup_count,
            daily=settings.rotate == "daily",
            max_age=settings.max_age,
            compress=settings.compress == "gzip",
        )

    @property
    def enabled(self) -> bool:
        return self.backup_count > 0


def next_midnight(after: float) -> float:
    """The first local midnight after the wall-clock time `after` (DST-aware)."""
    day = datetime.fromtimestamp(after).date() + timedelta(days=1)
    return datetime.combine(day, day_start()).timestamp()


def rotate(path: Path, rotation: Rotation, now: float) -> None:
    """Rotate the (closed) file at `path`; raises OSError if it cannot even be renamed. `now`
    (wall-clock) is what `max_age` counts from."""
    if rotation.compress:
        pending = path.with_name(f"{path.name}.{time.time_ns()}{PENDING}")
        os.replace(path, pending)
        for surplus in _backlog.add(path, pending, rotation.backup_count):
            surplus.unlink(missing_ok=True)
        _worker.submit(partial(_finish_pending, path, pending, rotation, now))
    else:
        _finish(path, path, rotation, now)


def recover(path: Path, rotation: Rotation, now: float) -> None:
    """At open, before the first rotation: finish the rotations a previous supervisor left half
    done (the files there now: not those this one's rotations set aside later), prune by age."""
    prefix, suffixes = f"{path.name}.", (PENDING, ".gz" + _PARTIAL)
    try:
        with os.scandir(path.parent) as entries:  # a regex only for the few that may be
            maybe = [
                e.name for e in entries if e.name.startswith(prefix) and e.name.endswith(suffixes)
            ]
    except OSError:  # a log directory that cannot be read (yet): nothing to recover
        return
    if maybe:
        name, pending, packing = (re.escape(n) for n in (path.name, *suffixes))
        leftover = re.compile(rf"{name}\.\d+(?:{pending}|{packing})")  # not module `m.log`'s
        left = sorted(n for n in maybe if leftover.fullmatch(n))
    else:
        left = []
    job = partial(_recover, path, left, rotation, now)
    if rotation.compress:
        _worker.submit(job)
    else:
        with contextlib.suppress(OSError):
            job()


def wait_idle(timeout: float) -> bool:
    """Wait until the background thread has nothing left to do; whether it got there."""
    return _worker.wait(timeout)


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of `path` (`app.log.3`, `app.log.1.gz`), in no particular order."""
    pattern = re.compile(re.escape(path.name) + r"\.\d+(?:\.gz)?")
    with os.scandir(path.parent) as entries:
        return [Path(e.path) for e in entries if pattern.fullmatch(e.name)]


def prune(path: Path, max_age: float, now: float) -> int:
    """Delete the rotated files of `path` last written more than `max_age` seconds before
    `now`; returns how many."""
    deleted = 0
    for rotated in rotated_files(path):
        try:
            if rotated.stat().st_mtime < now - max_age:
                rotated.unlink()
                deleted += 1
        except FileNotFoundError:  # removed meanwhile
            continue
    return deleted


# -- the work itself -------------------------------------------------------------------------------


def _finish(path: Path, source: Path, rotation: Rotation, now: float) -> None:
    """Make room for `<path>.1` and put `source` there (gzipped, with compression)."""
    if not source.exists():  # finished already (a job of a log file closed since)
        return
    _shift(path, rotation.backup_count)
    if rotation.compress:
        try:
            _compress(source, Path(f"{path}.1.gz"))
        except OSError as exc:  # a full disk, say: keep it uncompressed rather than lose it
            log.warning("cannot compress %s (%s); kept uncompressed", path, _describe(exc))
            os.replace(source, f"{path}.1")
    else:
        os.replace(source, f"{path}.1")
    if rotation.max_age is not None:
        prune(path, rotation.max_age, now)


def _finish_pending(path: Path, pending: Path, rotation: Rotation, now: float) -> None:
    """The job of one rotation: nothing if its file was deleted as surplus meanwhile."""
    taken, dropped = _backlog.take(path, pending)
    if dropped:
        log.warning(
            "%s fills faster than it can be compressed: rotated files beyond the %d kept are "
            "deleted uncompressed (%d so far; not logged again)",
            path,
            rotation.backup_count,
            dropped,
        )
    if taken:
        _finish_quietly(path, pending, rotation, now)


def _finish_quietly(path: Path, source: Path, rotation: Rotation, now: float) -> None:
    try:
        _finish(path, source, rotation, now)
    except OSError as exc:
        log.warning("cannot rotate %s (%s); its next start tries again", path, _describe(exc))


def _shift(path: Path, count: int) -> None:
    """`.1` -> `.2` ... -> `.<count>` (and their `.gz`), the last of them deleted."""
    for suffix in ("", ".gz"):
        Path(f"{path}.{count}{suffix}").unlink(missing_ok=True)
    for index in range(count - 1, 0, -1):
        for suffix in ("", ".gz"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}.{index}{suffix}", f"{path}.{index + 1}{suffix}")


def _compress(source: Path, target: Path) -> None:
    """`source` gzipped to `target` (owner-only, with `source`'s times), then `source` deleted;
    a reader never sees a partial `target`."""
    import gzip  # noqa: PLC0415  (only with `logging.compress: gzip`: not in every supervisor)
    import shutil  # noqa: PLC0415  (as gzip)

    partial_file = target.with_name(target.name + _PARTIAL)
    source_fd = open_regular(source, os.O_RDONLY)
    info = os.fstat(source_fd)
    try:
        fd = open_regular(partial_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except BaseException:
        os.close(source_fd)
        raise
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(target.name[:-3], "wb", 6, raw, int(info.st_mtime)) as packed,
            os.fdopen(source_fd, "rb") as plain,
        ):
            shutil.copyfileobj(plain, packed, 1 << 20)
        os.utime(partial_file, (info.st_atime, info.st_mtime))
        os.replace(partial_file, target)
    except BaseException:
        partial_file.unlink(missing_ok=True)
        raise
    source.unlink()


def _recover(path: Path, names: list[str], rotation: Rotation, now: float) -> None:
    for name in names:
        if name.endswith(".gz" + _PARTIAL):
            (path.parent / name).unlink(missing_ok=True)
    pending = [name for name in names if name.endswith(PENDING)]  # oldest first, by their names
    surplus = len(pending) - rotation.backup_count  # the newest would shift them away at once
    for name in pending[: max(surplus, 0)]:
        (path.parent / name).unlink(missing_ok=True)
    for name in pending[max(surplus, 0) :]:
        _finish_quietly(path, path.parent / name, rotation, now)
    if rotation.max_age is not None:
        prune(path, rotation.max_age, now)


def _describe(exc: OSError) -> str:
    code = exc.errno
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return type(exc).__name__


class _Backlog:
    """The files of each log set aside by `rotate` that the worker has not taken up yet, oldest
    first: at most `backup_count` of them; and how many were deleted as surplus."""

    def __init__(self) -> None:
        self._waiting: dict[Path, deque[Path]] = {}
        self._dropped: dict[Path, int] = {}
        self._told: set[Path] = set()
        self._lock = threading.Lock()

    def add(self, path: Path, pending: Path, keep: int) -> list[Path]:
        """Note `pending` as waiting; returns the oldest waiting files beyond `keep`, to delete."""
        with self._lock:
            waiting = self._waiting.setdefault(path, deque())
            waiting.append(pending)
            surplus = [waiting.popleft() for _ in range(len(waiting) - keep)]
            if surplus:
                self._dropped[path] = self._dropped.get(path, 0) + len(surplus)
            return surplus

    def take(self, path: Path, pending: Path) -> tuple[bool, int]:
        """Whether `pending` is still to be finished (it is no longer waiting then), and how
        many files of `path` were deleted as surplus if that was not said yet (else 0)."""
        with self._lock:
            waiting = self._waiting.get(path, deque())
            taken = pending in waiting
            if taken:
                waiting.remove(pending)
            dropped = self._dropped.get(path, 0)
            if not dropped or path in self._told:
                return taken, 0
            self._told.add(path)
            return taken, dropped


class _Worker:
    """One daemon thread running jobs in order; started on the first job."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                if self._thread is None:
                    atexit.register(self.wait, _EXIT_WAIT)
                self._thread = threading.Thread(target=self._run, name="log-rotation", daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:  # a bug, not the disk: never the end of the thread
                log.exception("log rotation failed")
            finally:
                self._jobs.task_done()

    def wait(self, timeout: float) -> bool:
        done = self._jobs.all_tasks_done
        with done:
            return done.wait_for(lambda: self._jobs.unfinished_tasks == 0, timeout)


_worker = _Worker()
_backlog = _Backlog()
