"""The baseline of the capture bench: module output handled as the supervisor did before it handled
a read at a time (commit 1187462, orchestrator/output.py): each line its own `logging` record,
formatted, and written with one `write`. Replayed in this process over the same lines as the
supervisor gets, timing only the handling of each read (`time.process_time`), not the poll loop
around it: a floor of what that way cost, so the ratio to it is, if anything, unfair to today's.

`replay(...)` runs either way through the same pipe and reads.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from module_sdk.logformat import JSON_PREFIX, PRINT_LOGGER, json_line
from orchestrator.config import LoggingSection, Redactor
from orchestrator.logrotate import Rotation
from orchestrator.logsetup import LogFile
from orchestrator.output import ModuleLog, OutputReader

_READ_SIZE = 65536
_STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


class _Reader(Protocol):
    def read(self) -> object: ...


class OldModuleLog:
    """The old `ModuleLog.write`: a time, a regex, a scrub and a logging record per line."""

    def __init__(self, path: Path, log_format: str, redactor: Redactor) -> None:
        self.format = log_format
        self.name = "printer"
        self._redactor = redactor
        self._stamped_second = -1
        self._stamp_prefix = ""
        self._logger = logging.Logger("module.printer")
        self.file = LogFile(path, Rotation(max_bytes=64 << 20, backup_count=5))
        self.file.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self.file)

    def write(self, line: str) -> None:
        now = time.time()
        if self.format == "json":
            if not line.startswith(JSON_PREFIX):
                line = json_line(
                    now, level="INFO", module=self.name, logger=PRINT_LOGGER, message=line
                )
        elif not _STAMPED.match(line):
            second = int(now)
            if second != self._stamped_second:
                self._stamped_second = second
                self._stamp_prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            line = f"{self._stamp_prefix},{int(now % 1 * 1000):03d} " + line
        self._logger.info(self._redactor.scrub(line))


class OldOutputReader:
    """The old `OutputReader.read`: split the read into lines, decode and write each."""

    def __init__(self, fd: int, log: OldModuleLog) -> None:
        self.fd = fd
        self._log = log
        self._partial = b""
        os.set_blocking(fd, False)

    def read(self) -> bool:
        try:
            chunk = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            self._log.write(line.decode("utf-8", "replace").rstrip("\r"))
        return True


def replay(payload: bytes, lines: int, *, old: bool, log_format: str = "text") -> float:
    """Microseconds of CPU per line to handle `payload` (`lines` lines) as the supervisor reads
    it from a module's pipe: the old way, or today's (orchestrator/output.py)."""
    redactor = Redactor(("a-secret-value",))
    with tempfile.TemporaryDirectory(prefix="obench-capture-") as scratch:
        read_fd, write_fd = os.pipe()
        reader: _Reader
        close: Callable[[], None]
        if old:
            old_log = OldModuleLog(Path(scratch) / "printer.log", log_format, redactor)
            reader = OldOutputReader(read_fd, old_log)

            def close() -> None:
                old_log.file.close()
                os.close(read_fd)

        else:
            settings = LoggingSection(
                directory=Path(scratch), format=log_format, max_file_size_mb=64
            )
            log = ModuleLog("printer", settings, redactor, echo=False)
            new_reader = OutputReader(os.fdopen(read_fd, "rb", buffering=0), log)
            reader = new_reader

            def close() -> None:
                new_reader.close()
                log.close()

        os.set_blocking(write_fd, False)
        spent, offset = 0.0, 0
        try:
            while offset < len(payload):
                offset += os.write(write_fd, payload[offset : offset + _READ_SIZE])
                started = time.process_time()
                reader.read()
                spent += time.process_time() - started
        finally:
            os.close(write_fd)
            close()
    return spent / lines * 1e6
