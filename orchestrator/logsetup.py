"""The supervisor's own logging: `logs/app.log`, rotated by size, and the console in the foreground."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from orchestrator.config import LoggingSection, RedactingFilter, Redactor

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(settings: LoggingSection, redactor: Redactor, *, console: bool) -> Path:
    """Send every `orchestrator`, `broker` and `module_sdk` logger to `app.log` (and the console)
    through a filter that hides secrets. Returns the path of `app.log`."""
    directory = Path(settings.directory)
    directory.mkdir(parents=True, exist_ok=True)
    app_log = directory / "app.log"
    redacting = RedactingFilter(redactor)
    file_handler = logging.handlers.RotatingFileHandler(
        app_log,
        maxBytes=int(settings.max_file_size_mb * 1024 * 1024),
        backupCount=settings.backup_count,
        encoding="utf-8",
    )
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        handlers.append(stream)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        handler.addFilter(redacting)
        root.addHandler(handler)
    root.setLevel(settings.level)
    return app_log
