"""Capture of each child's stdout and stderr into `logs/<module>.log`, rotated by size.

The supervisor owns the files, so rotation works however many times the child restarts and whatever
the child prints. In the foreground, each line is also echoed to the console tagged with the module.
A line that cannot be written (a full disk) is counted, not fatal: see `logsetup.LogFile`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import BinaryIO

from module_sdk.logformat import JSON_PREFIX, PRINT_LOGGER, json_line
from orchestrator.config import LoggingSection, Redactor
from orchestrator.logsetup import LogFile

_READ_SIZE = 65536
_MAX_PARTIAL = 64 * 1024  # a line longer than this is written in pieces
_STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")  # a line logging wrote: timed already


class ModuleLog:
    """The log file of one module (and the console echo), kept across the module's restarts."""

    def __init__(
        self, name: str, settings: LoggingSection, redactor: Redactor, *, echo: bool
    ) -> None:
        self.name = name
        self.format = settings.format
        self.path = Path(settings.directory) / f"{name}.log"
        self._redactor = redactor
        self._stamped_second = -1
        self._stamp_prefix = ""
        self._logger = logging.Logger(f"module.{name}")  # standalone: never propagates to root
        self.file = LogFile(
            self.path,
            max_bytes=int(settings.max_file_size_mb * 1024 * 1024),
            backup_count=settings.backup_count,
            announce=True,
            notice_prefix="[orchestrator] ",
        )
        self.file.setFormatter(_LineFormatter(name, self.format))
        self._logger.addHandler(self.file)
        if echo:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter(f"[{name}] %(message)s"))
            self._logger.addHandler(console)

    def write(self, line: str) -> None:
        """Write one line of the module's output: a line its logging wrote passes as it is
        (the SDK stamps and formats them); one it printed gets the time, or in JSON logs
        becomes a JSON object of logger `print`."""
        now = time.time()
        if self.format == "json":
            if not line.startswith(JSON_PREFIX):
                line = json_line(
                    now, level="INFO", module=self.name, logger=PRINT_LOGGER, message=line
                )
        elif not _STAMPED.match(line):
            line = self._stamp(now) + line
        self._logger.info(self._redactor.scrub(line))

    def _stamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamped_second:  # strftime once a second, not once a line
            self._stamped_second = second
            self._stamp_prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp_prefix},{int(now % 1 * 1000):03d} "

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines of the current log file (reads at most 64 KB of it)."""
        try:
            with self.path.open("rb") as log_file:
                size = log_file.seek(0, os.SEEK_END)
                log_file.seek(max(0, size - 65536))
                data = log_file.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-lines:]

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


class _LineFormatter(logging.Formatter):
    """A module's lines pass as `ModuleLog.write` made them; the log file's own notices (lines
    lost to a full disk) are formatted as the rest of the file."""

    def __init__(self, module: str, log_format: str) -> None:
        super().__init__("%(message)s")
        self._module = module
        self._json = log_format == "json"

    def format(self, record: logging.LogRecord) -> str:
        if record.name.startswith("module."):
            return record.getMessage()
        if self._json:
            message = record.getMessage()
            return json_line(
                record.created,
                level=record.levelname,
                module=self._module,
                logger="orchestrator",
                message=message,
            )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp},{int(record.msecs):03d} {record.getMessage()}"


class OutputReader:
    """Reads one child's output pipe without blocking and splits it into lines for its ModuleLog."""

    def __init__(self, stream: BinaryIO, log: ModuleLog) -> None:
        self._stream = stream  # owns the fd: closing it (or losing it) closes the pipe
        self.fd = stream.fileno()
        self._log = log
        self._partial = b""
        os.set_blocking(self.fd, False)

    def read(self) -> bool:
        """Consume one chunk (a chatty module must not keep the loop from the rest of its work);
        False at end of file, when the pipe is closed."""
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            self._flush_partial()
            self._stream.close()
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._log.write(line.decode("utf-8", "replace").rstrip("\r"))
        if len(self._partial) > _MAX_PARTIAL:
            self._flush_partial()
        return True

    def _flush_partial(self) -> None:
        if self._partial:
            self._log.write(self._partial.decode("utf-8", "replace"))
            self._partial = b""

    def close(self) -> None:
        """Read what is already there (a bounded amount), then close the pipe."""
        for _ in range(16):
            if not self.read():
                return
        self._flush_partial()
        self._stream.close()
