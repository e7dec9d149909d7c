"""Hiding secrets: the values filled in from `${VAR}`, and values under secret-looking keys."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_SCRUB_LENGTH = 4
"""Secrets shorter than this are too likely to occur by chance to be scrubbed out of free text."""

SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
)


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (case-insensitive; `-` counts as `_`: `X-Api-Key`)."""
    if not isinstance(key, str):
        return False
    normalised = key.lower().replace("-", "_")
    return any(part in normalised for part in SECRET_KEY_PARTS)


class Redactor:
    """Hides a set of secret values in text and in configuration trees."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Hide these secrets too (after a config reload); those known before stay hidden."""
        self._secrets = self._secrets | frozenset(s for s in secrets if s)
        long_enough = [s for s in self._secrets if len(s) >= MIN_SCRUB_LENGTH]
        # As a JSON log line shows them too (a quote, a backslash or a newline escaped).
        escaped = (json.dumps(s, ensure_ascii=False)[1:-1] for s in long_enough)
        scrubbable = sorted({*long_enough, *escaped}, key=len, reverse=True)
        self._longest = len(scrubbable[0]) if scrubbable else 0
        self._pattern = re.compile("|".join(map(re.escape, scrubbable))) if scrubbable else None

    def scrub(self, text: str) -> str:
        """`text` with each occurrence of each secret of 4 characters or more replaced by `***`."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    @property
    def longest(self) -> int:
        """The length of the longest text `scrub` replaces (0: none): text scrubbed in pieces
        hides every secret if each piece but the last keeps back its last `longest - 1`
        characters for the next (and is not cut within a secret)."""
        return self._longest

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where in `text` the secrets `scrub` would replace are: (start, end) of each."""
        if self._pattern is None:
            return []
        return [match.span() for match in self._pattern.finditer(text)]

    def redact(self, obj: Any) -> Any:
        """A deep copy of a mapping/list tree in which a string that is a secret, or contains one of
        4 characters or more, becomes `***`, and so does any non-empty value under a secret-looking
        key (`password`, `token`, `api_key`, ...)."""
        if isinstance(obj, str):
            return MASK if self._is_secret_text(obj) else obj
        if isinstance(obj, Mapping):
            return {
                key: MASK if is_secret_key(key) and _present(value) else self.redact(value)
                for key, value in obj.items()
            }
        if isinstance(obj, list | tuple):
            items = [self.redact(value) for value in obj]
            return items if isinstance(obj, list) else tuple(items)
        return copy.deepcopy(obj)

    def _is_secret_text(self, text: str) -> bool:
        if text in self._secrets:
            return True
        return self._pattern is not None and self._pattern.search(text) is not None


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str | Mapping | list | tuple) and not value)


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets out of each record's final message and traceback.

    It formats the message (`msg % args`) itself, scrubs it and stores it as `record.msg` with
    `record.args = None`; the traceback text is rendered and scrubbed into `record.exc_text`,
    which formatters then use as is. Attach it to handlers (it never drops a record).
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub `record` in place; always returns True."""
        scrub = self._redactor.scrub
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, without failing the handler
            message = f"{record.msg!s} (unformattable arguments: {record.args!r})"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True
