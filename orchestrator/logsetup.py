"""The supervisor's own logging: `logs/app.log`, rotated, and the console in the foreground.

`LogFile` is the handler behind app.log and every `logs/<module>.log`. A disk that fills up (or
fails, or turns read-only) must cost lines, never the supervisor nor its run directory: a line that
cannot be written is counted, not printed anywhere else; the count shows in `orchestrator status`
and, once writing works again (retried on later lines, reopening the file), in the log itself.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from module_sdk.logformat import JsonFormatter
from orchestrator import logrotate
from orchestrator.bounded_stderr import bound_stderr
from orchestrator.config import LoggingSection, RedactingFilter, Redactor
from orchestrator.logrotate import Rotation
from orchestrator.record import mutable_record
from orchestrator.regular_file import NotRegularFileError, check_writable, open_regular

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RETRY = 0.5  # seconds between attempts while a file cannot be written: lines meanwhile are lost
_RECHECK = 1.0  # seconds between checks that the path still names the open file
_ROTATE_AGAIN = 60.0  # seconds a file that could not be rotated is written on before a retry

log = logging.getLogger(__name__)


@mutable_record
class LogLoss:
    """Lines one log file lost: the current episode while it is failing, else the last one."""

    error: str
    since: float  # wall-clock time of the first line lost
    lost: int = 0
    recovered: float | None = None  # when writing worked again; None while it still fails


class LogFile(logging.Handler):
    """Appends formatted records (or blocks of lines, `write_block`) to `path`, rotated as
    `rotation` says (see orchestrator/logrotate.py), through an owner-only file descriptor.

    When a write fails (ENOSPC, EIO, EDQUOT, EROFS...), the line is counted as lost and the file
    closed, so that deleting it frees its space; later lines retry (at most every `_RETRY`
    seconds), reopening the path. The first line written again is a notice of how many were lost.
    With `announce`, the start and end of a loss are also logged (to app.log, and the console in
    the foreground): for module logs, never for app.log itself.
    """

    def __init__(
        self,
        path: Path,
        rotation: Rotation,
        *,
        announce: bool = False,
        notice_prefix: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.path = path
        self._rotation = rotation
        self._by_size = rotation.enabled and rotation.max_bytes > 0
        self._rotate_again = 0.0  # (monotonic) after a rotation failed, the file grows till then
        self._clock = clock  # wall-clock time: when a day ends, how old a rotated file is
        self._rotate_at: float | None = None  # the next midnight, with daily rotation
        self._announce = announce
        self._notice_prefix = notice_prefix
        self._fd: int | None = None
        self._identity = (0, 0)  # (st_dev, st_ino) of the open file
        self._size = 0
        self._checked = 0.0  # monotonic time the path was last checked against the open file
        self._retry_at = 0.0
        self._torn = False  # a line was cut short: the next write starts on a fresh line
        self._closed = False
        self.loss: LogLoss | None = None
        if rotation.enabled:
            logrotate.recover(path, rotation, clock())
        with contextlib.suppress(OSError):  # the file exists from the start, as before any line
            self._open(parents=True)

    @property
    def failing(self) -> bool:
        """Whether the last line could not be written."""
        return self.loss is not None and self.loss.recovered is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._closed:
            return
        try:
            text = self.format(record)
        except Exception as exc:  # a bad record costs itself, and says so in status
            self._count_loss(f"cannot format a record ({type(exc).__name__})")
            return
        self._write_or_count((text + "\n").encode("utf-8", "replace"), 1)

    def write_block(self, data: bytes, lines: int) -> None:
        """Append `data`, `lines` whole lines formatted already (a module's output, a read at a
        time), as `emit` does a record: rotated between lines, counted as lost if it fails."""
        if not self._closed:
            self._write_or_count(data, lines)

    def _write_or_count(self, data: bytes, lines: int) -> None:
        now = time.monotonic()
        if self.failing and now < self._retry_at:
            self._count_loss(None, lines)
            return
        try:
            self._write_block(data, now)
        except OSError as exc:
            self._retry_at = now + _RETRY
            self._close_fd()  # a deleted file frees its space; a reopen finds a new one
            self._count_loss(_describe(exc), lines)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  (logging's name)
        """Count the record as lost. Never logging's default: a traceback per line on stderr,
        which for a detached supervisor is a file in its (often small) run directory."""
        exc = sys.exc_info()[1]
        self._count_loss(_describe(exc) if exc is not None else "cannot write")

    def retry(self) -> None:
        """If the file is failing, try now (not only on the next line) to write the notice of
        what was lost; `status` calls this so that a quiet log recovers too."""
        with self._locked():
            now = time.monotonic()
            if self._closed or not self.failing or now < self._retry_at:
                return
            try:
                self._write_block(b"", now)
            except OSError as exc:
                self._retry_at = now + _RETRY
                self._close_fd()
                if self.loss is not None:
                    self.loss.error = _describe(exc)

    def report(self) -> dict[str, Any] | None:
        """This file's current or last loss, for `status --json`; None if it never lost a line."""
        loss = self.loss
        if loss is None:
            return None
        return {
            "file": str(self.path),
            "error": loss.error,
            "lost": loss.lost,
            "since": loss.since,
            "failing": loss.recovered is None,
            "recovered": loss.recovered,
        }

    def flush(self) -> None:
        """Nothing to flush: every line is written with os.write."""

    def close(self) -> None:
        with self._locked():
            self._closed = True
            self._close_fd()
        super().close()

    # -- writing ---------------------------------------------------------------------------------

    def _write_block(self, data: bytes, now: float) -> None:
        """Write `data` (after the notice of a loss, if one is due); raises OSError."""
        if self.failing:
            self._append(self._notice(), now)
            self._recovered()
        if data:
            self._append(data, now)

    def _append(self, data: bytes, now: float) -> None:
        """Write `data`, rotating by size between its lines: a file outgrows `max_bytes` only by
        a single line longer than that."""
        while True:
            self._prepare(now, len(data))
            room = self._rotation.max_bytes - self._size
            if not self._rotating_by_size() or len(data) <= room:
                break
            cut = data.rfind(b"\n", 0, room) + 1
            if cut <= 0:  # its first line alone is longer than a file: that line, whole
                cut = data.find(b"\n") + 1
                if cut <= 0 or cut == len(data):
                    break
            self._write(data[:cut])
            data = data[cut:]
        self._write(data)

    def _prepare(self, now: float, size: int) -> None:
        """Have an open file that is still at `path`, with room for `size` more bytes (rotated
        if not, or if a day ended)."""
        if self._fd is not None and now >= self._checked + _RECHECK:
            self._checked = now
            try:
                info = os.stat(self.path)
                moved = (info.st_dev, info.st_ino) != self._identity
            except OSError:
                moved = True
            if moved:  # rotated or deleted by someone else: write to the path again
                self._close_fd()
            else:  # truncated by someone else (logrotate's copytruncate): rotate by its size
                self._size = info.st_size
        if self._fd is None:
            self._open()
        if self._rotate_at is not None and self._clock() >= self._rotate_at:
            if self._size > 0:
                self._rollover()  # reopening sets the next midnight
            else:
                self._rotate_at = logrotate.next_midnight(self._clock())
        if (
            self._rotating_by_size()
            and self._size > 0
            and self._size + size > self._rotation.max_bytes
        ):
            self._rollover()

    def _rotating_by_size(self) -> bool:
        return self._by_size and time.monotonic() >= self._rotate_again

    def _open(self, *, parents: bool = False) -> None:
        """Open (or create) the file. A reopen makes its directory again if it was removed, but
        never the directories above: a project that was moved or deleted would be made again at
        its old path, for the supervisor alone to write in (the lines are counted as lost)."""
        try:
            self.path.parent.mkdir(parents=parents, exist_ok=True)
        except FileExistsError:  # a file where the directory should be: not "File exists"
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", self.path.parent) from None
        fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o037:  # made before logs were private
            with contextlib.suppress(OSError):
                os.fchmod(fd, info.st_mode & 0o640)
        self._fd, self._size = fd, info.st_size
        self._identity = (info.st_dev, info.st_ino)
        self._checked = time.monotonic()
        if self._rotation.daily and self._rotation.enabled:  # a file of yesterday rotates first
            self._rotate_at = logrotate.next_midnight(
                info.st_mtime if info.st_size else self._clock()
            )

    def _rollover(self) -> None:
        """`app.log` -> `app.log.1` -> ... (see orchestrator/logrotate.py); the rotated files
        keep their owner-only mode."""
        self._close_fd()
        try:
            logrotate.rotate(self.path, self._rotation, self._clock())
        except OSError as exc:  # a directory at `app.log.1`, say: its lines were all lost
            self._rotate_again = time.monotonic() + _ROTATE_AGAIN
            if self._announce:
                log.warning("cannot rotate %s (%s); writing on to it", self.path, _describe(exc))
        self._open()

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        if self._torn:
            data = b"\n" + data
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:
            self._size += written
            if written:
                self._torn = written < len(data)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    # -- counting --------------------------------------------------------------------------------

    def _count_loss(self, error: str | None, lines: int = 1) -> None:
        """`lines` more lines lost; `error` is why (None: the same reason as the lines before)."""
        if not self.failing:
            self.loss = LogLoss(error=error or "cannot write", since=time.time())
            if self._announce:
                log.warning(
                    "%s: cannot write (%s); counting the lines lost, see `orchestrator status`",
                    self.path,
                    self.loss.error,
                )
        assert self.loss is not None
        if error is not None:
            self.loss.error = error
        self.loss.lost += lines

    def _notice(self) -> bytes:
        assert self.loss is not None
        message = self._notice_prefix + self._summary()
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0, message, None, None)
        return (self.format(record) + "\n").encode("utf-8", "replace")

    def _recovered(self) -> None:
        assert self.loss is not None
        self.loss.recovered = time.time()
        if self._announce:
            log.warning("%s", self._summary())

    def _summary(self) -> str:
        assert self.loss is not None
        loss, now = self.loss, time.time()
        lines = "line" if loss.lost == 1 else "lines"
        return (
            f"{self.path}: {loss.lost} {lines} lost from {_clock(loss.since)} to {_clock(now)} "
            f"({loss.error}); writing again"
        )

    @contextlib.contextmanager
    def _locked(self) -> Any:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def log_losses(handlers: Iterable[LogFile]) -> list[dict[str, Any]]:
    """What app.log and the given module logs lost, for `status`: one entry per file that lost
    lines (retried first, so a file that can be written again shows as recovered)."""
    everyone = [h for h in logging.getLogger().handlers if isinstance(h, LogFile)]
    reports = []
    for handler in [*everyone, *handlers]:
        handler.retry()
        report = handler.report()
        if report is not None:
            reports.append(report)
    return reports


def setup_logging(settings: LoggingSection, redactor: Redactor, *, console: bool) -> Path:
    """Send every `orchestrator`, `broker` and `module_sdk` logger to `app.log` (and the console)
    through a filter that hides secrets. Returns the path of `app.log`.

    Without the console (a detached supervisor), stderr is a file in the run directory: bound it.
    """
    directory = Path(settings.directory)
    directory.mkdir(parents=True, exist_ok=True)
    app_log = directory / "app.log"
    check_writable(app_log)  # before the handler, which would count it as lines lost
    redacting = RedactingFilter(redactor)
    file_handler = LogFile(app_log, Rotation.from_settings(settings))
    json_lines = settings.format == "json"
    file_handler.setFormatter(JsonFormatter("app") if json_lines else logging.Formatter(LOG_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        handlers.append(stream)
    else:
        bound_stderr()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        handler.addFilter(redacting)
        root.addHandler(handler)
    root.setLevel(settings.level)
    return app_log


def _describe(exc: BaseException) -> str:
    """`No space left on device (ENOSPC)` for an OSError, else the exception's type (its words
    might quote what the record held)."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, NotRegularFileError) and isinstance(code, int):
        return f"{exc.strerror} ({errno.errorcode.get(code, code)})"
    if isinstance(code, int) and code in errno.errorcode:
        return f"{os.strerror(code)} ({errno.errorcode[code]})"
    return type(exc).__name__


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
