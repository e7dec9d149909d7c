"""Capture of each child's stdout and stderr into `logs/<module>.log`, rotated as `logging:` says.

The supervisor owns the files, so rotation works however many times the child restarts and whatever
the child prints. In the foreground, each line is also echoed to the console tagged with the module
(on a terminal, its escape sequences shown, not obeyed, as `logs` shows them).
A line that cannot be written (a full disk) is counted, not fatal: see `logsetup.LogFile`.

Output is handled a read at a time, never a line at a time: the lines of one read (up to 64 KiB)
are decoded, scrubbed of secrets, stamped with the one time of that read and written with one
`write`. Per line, only what cannot be shared is done (a JSON string in JSON logs); that keeps a
module that floods its output from costing the supervisor's loop more than a microsecond or two a
line.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from module_sdk.logformat import JSON_PREFIX, PRINT_LOGGER, json_head, json_line, json_string
from orchestrator.config import LoggingSection, Redactor
from orchestrator.logrotate import Rotation
from orchestrator.logsetup import LogFile
from orchestrator.regular_file import open_regular
from orchestrator.terminal import terminal_safe

READ_SIZE = 65536  # bytes handled at most per read: a read of less found the pipe empty
_PIPE_SIZE = 1 << 20  # room for a burst while the loop does other work (the default is 64 KiB)
_MAX_PARTIAL = 64 * 1024  # a line longer than this is written in pieces
_CUT_SHORT = re.compile("[\udc80-\udcff]+\\Z")  # bytes of a character cut short (surrogateescape)
# How a line that logging wrote starts (those are timed already; the others get the time).
_STAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_DIGIT_AFTER_NEWLINE = re.compile(r"\n\d")
_CR_EOL = re.compile(r"\r+\n")


class ModuleLog:
    """The log file of one module (and the console echo), kept across the module's restarts."""

    def __init__(
        self,
        name: str,
        settings: LoggingSection,
        redactor: Redactor,
        *,
        echo: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.format = settings.format
        self.path = Path(settings.directory) / f"{name}.log"
        self.redactor = redactor
        self._clock = clock
        self._stamped_second = -1
        self._stamp_prefix = ""
        self._echo: TextIO | None = sys.stderr if echo else None
        self._echo_escaped = echo and _isatty(sys.stderr)  # on a terminal, as `logs` shows it
        self._echo_prefix = f"[{name}] "
        self.file = LogFile(
            self.path,
            Rotation.from_settings(settings),
            announce=True,
            notice_prefix="[orchestrator] ",
            clock=clock,
        )
        self.file.setFormatter(_NoticeFormatter(name, self.format))

    def write_lines(self, text: str) -> None:
        """Write `text`, whole lines of the module's output each ending with a newline, all
        stamped with the time now: a line its logging wrote passes as it is (the SDK stamps and
        formats them); one it printed gets the time, or in JSON logs becomes a JSON object of
        logger `print`. Secrets are scrubbed from what the module wrote, before it is wrapped."""
        if not text:
            return
        now = self._clock()
        text = self.redactor.scrub(text)
        if not text.isascii() and _ESCAPED.search(text):  # bytes that were not UTF-8: shown as �
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if self.format == "json":
            head = json_head(now, level="INFO", module=self.name, logger=PRINT_LOGGER)
            text = (
                "\n".join(
                    [
                        line if line.startswith(JSON_PREFIX) else head + json_string(line) + "}"
                        for line in text[:-1].split("\n")
                    ]
                )
                + "\n"
            )
        else:
            text = _stamp_lines(text[:-1], self._stamp(now)) + "\n"
        self.file.write_block(text.encode("utf-8", "replace"), text.count("\n"))
        if self._echo is not None:
            self._echo_lines(text)

    def _stamp(self, now: float) -> str:
        second = int(now)
        if second != self._stamped_second:  # strftime once a second, not once a read
            self._stamped_second = second
            self._stamp_prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp_prefix},{int(now % 1 * 1000):03d} "

    def _echo_lines(self, text: str) -> None:
        assert self._echo is not None
        if self._echo_escaped:
            text = terminal_safe(text)
        try:
            prefix = self._echo_prefix
            self._echo.write(prefix + text[:-1].replace("\n", "\n" + prefix) + "\n")
            self._echo.flush()
        except (OSError, ValueError):  # a closed terminal costs the echo, never the log
            self._echo = None

    def tail(self, lines: int) -> list[str]:
        """The last `lines` lines of the current log file (reads at most 64 KB of it)."""
        try:
            with os.fdopen(open_regular(self.path, os.O_RDONLY), "rb") as log_file:
                size = log_file.seek(0, os.SEEK_END)
                log_file.seek(max(0, size - 65536))
                data = log_file.read()
        except OSError:
            return []
        return data.decode("utf-8", "replace").splitlines()[-lines:]

    def close(self) -> None:
        self.file.close()


class _NoticeFormatter(logging.Formatter):
    """The log file's own notices (lines lost to a full disk), formatted as the rest of the file."""

    def __init__(self, module: str, log_format: str) -> None:
        super().__init__("%(message)s")
        self._module = module
        self._json = log_format == "json"

    def format(self, record: logging.LogRecord) -> str:
        if self._json:
            return json_line(
                record.created,
                level=record.levelname,
                module=self._module,
                logger="orchestrator",
                message=record.getMessage(),
            )
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp},{int(record.msecs):03d} {record.getMessage()}"


class OutputReader:
    """Reads one child's output pipe without blocking and hands its whole lines to its ModuleLog,
    a read at a time."""

    def __init__(self, stream: BinaryIO, log: ModuleLog) -> None:
        self._stream = stream  # owns the fd: closing it (or losing it) closes the pipe
        self.fd = stream.fileno()
        self._log = log
        self._partial = b""
        self.last_line = ""  # the last line it printed that was not blank (its last words)
        os.set_blocking(self.fd, False)
        with contextlib.suppress(OSError):  # over the system's pipe-max-size: the default
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    def read(self) -> int | None:
        """Consume one chunk (a chatty module must not keep the loop from the rest of its work);
        the bytes read (0: none were there), or None at end of file, when the pipe is closed."""
        try:
            chunk = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return 0
        if not chunk:
            self._flush_partial()
            self._stream.close()
            return None
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if end:
            self._log.write_lines(_text(data[:end]))
            self.last_line = _last_line(data[:end]) or self.last_line
        if len(self._partial) > _MAX_PARTIAL:
            self._write_piece()
        return len(chunk)

    def drain(self, reads: int = 16) -> bool:
        """Read what is already there (at most `reads` chunks); False at end of file. A short
        read is not the end: the next one may be (end of file after the writer's last bytes)."""
        for _ in range(reads):
            got = self.read()
            if got is None:
                return False
            if got == 0:
                return True
        return True

    def flush_partial(self) -> None:
        """Write an unterminated last line as a line: its writer exited (its last words)."""
        self._flush_partial()

    def _write_piece(self) -> None:
        """Write most of an unfinished line that grew too long as a line of its own (the rest
        waits for what follows; see `_piece_end`)."""
        text = self._partial.decode("utf-8", "surrogateescape")  # the bytes as they are, even cut
        cut = _piece_end(text, self._log.redactor)
        if cut > 0:
            piece = text[:cut].encode("utf-8", "surrogateescape")
            self._partial = self._partial[len(piece) :]
            self._log.write_lines(_decode(piece) + "\n")

    def _flush_partial(self) -> None:
        if self._partial:
            self._log.write_lines(_decode(self._partial) + "\n")
            self.last_line = _last_line(self._partial) or self.last_line
            self._partial = b""

    def close(self) -> None:
        """Read what is already there (a bounded amount), then close the pipe."""
        if self.drain():
            self._flush_partial()
            self._stream.close()


def _last_line(block: bytes) -> str:
    """The last line of `block` that is not blank (looked for in its last 4 KiB), or ""."""
    for line in reversed(block[-4096:].splitlines()):
        if line.strip():
            return line.decode("utf-8", "replace")
    return ""


def _isatty(stream: TextIO) -> bool:
    """Whether `stream` is a terminal (a closed one is not)."""
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed
        return False


def _decode(data: bytes) -> str:
    """Output as text; bytes that are not UTF-8 kept as surrogates (as os.environ keeps them), so
    that a secret holding such bytes is still found, and shown as U+FFFD once scrubbed."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def _stamp_lines(text: str, stamp: str) -> str:
    """`text` (lines without the last one's newline) with `stamp` before each line that logging
    did not write. A regular expression's `^` tried at every character cost ~15 ns a byte, most
    of a flooding module's cost to the loop: lines that start with a digit are rare in printed
    output, so when none does, the stamp goes in with `replace`, at C speed."""
    if not text[:1].isdigit() and _DIGIT_AFTER_NEWLINE.search(text) is None:
        return stamp + text.replace("\n", "\n" + stamp)
    stamped = _STAMPED.match
    return "\n".join(
        [
            line if line[:1].isdigit() and stamped(line) else stamp + line
            for line in text.split("\n")
        ]
    )


def _text(data: bytes) -> str:
    """Whole lines of output as text, each line's trailing carriage returns dropped."""
    text = _decode(data)
    return _CR_EOL.sub("\n", text) if "\r" in text else text


_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte `_decode` could not read as UTF-8


def _piece_end(text: str, redactor: Redactor) -> int:
    """Where to cut an overlong unfinished line, `text`, for a piece scrubbed on its own: before
    what might be the start of a secret (its last `longest - 1` characters), outside any secret
    and any character (a character cut short shows as up to 3 surrogates at the end)."""
    cut_short = _CUT_SHORT.search(text, max(len(text) - 3, 0))
    cut = (cut_short.start() if cut_short else len(text)) - max(redactor.longest - 1, 0)
    for start, end in redactor.spans(text):
        if start < cut < end:
            return start
        if end >= cut:
            break
    return cut
