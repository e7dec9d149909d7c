"""Log lines as JSON objects, one per line (`logging.format: json` in main.yaml): the same fields
in the supervisor's `app.log` and in every module's log, for a log store to index.

`{"time": "2026-12-02T17:30:01.123+00:00", "level": "INFO", "module": "orders", "logger":
"orders.db", "message": "...", "exception": "Traceback ..."}` (`exception` only when there is
one). Non-ASCII text stays as it is (UTF-8).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from json.encoder import encode_basestring

PRINT_LOGGER = "print"  # the `logger` of a line a module printed (stdout and stderr)
JSON_PREFIX = '{"time": '  # how every line of ours begins: the supervisor passes them through


def iso_time(seconds: float) -> str:
    """`2026-12-02T17:30:01.123+00:00`: local time with its offset, to the millisecond."""
    return datetime.fromtimestamp(seconds, UTC).astimezone().isoformat(timespec="milliseconds")


def json_string(text: str) -> str:
    """`text` as a JSON string, quoted, non-ASCII kept: as `json_line` writes its values."""
    return encode_basestring(text)


def json_head(seconds: float, *, level: str, module: str, logger: str) -> str:
    """A `json_line` up to its message: `json_head(...) + json_string(message) + "}"` is
    `json_line(...)` without an exception, built once for many lines of the same moment."""
    return (
        f'{{"time": "{iso_time(seconds)}", "level": {json_string(level)}, '
        f'"module": {json_string(module)}, "logger": {json_string(logger)}, "message": '
    )


def json_line(
    seconds: float,
    *,
    level: str,
    module: str,
    logger: str,
    message: str,
    exception: str | None = None,
) -> str:
    """One log line as a JSON object (no newline)."""
    record = {
        "time": iso_time(seconds),
        "level": level,
        "module": module,
        "logger": logger,
        "message": message,
    }
    if exception:
        record["exception"] = exception
    return json.dumps(record, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Formats records as `json_line`s, for `module` (`app` for the supervisor's own log)."""

    def __init__(self, module: str) -> None:
        super().__init__()
        self.module = module

    def format(self, record: logging.LogRecord) -> str:
        exception = None
        if record.exc_info:
            exception = self.formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = (exception + "\n" if exception else "") + self.formatStack(
                record.stack_info
            )
        return json_line(
            record.created,
            level=record.levelname,
            module=self.module,
            logger=record.name,
            message=record.getMessage(),
            exception=exception,
        )
