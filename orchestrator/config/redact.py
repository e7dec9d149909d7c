"""Hiding secrets: the values filled in from `${VAR}`, and values under secret-looking keys."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ahocorasick_rs import BytesAhoCorasick

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
    """Hides a set of secret values in text and in configuration trees.

    The text is searched for all the secrets at once, in one pass whatever their number (an
    Aho-Corasick automaton): a supervisor scrubs every chunk of every module's output on its loop,
    and one alternation regex of thousands of `.env` values took a second a chunk. Where several
    secrets start at the same place, the longest is hidden; the search goes on after it.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._finder: BytesAhoCorasick | None = None
        self._longest = 0
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Hide these secrets too (after a config reload); those known before stay hidden."""
        self._secrets = self._secrets | frozenset(s for s in secrets if s)
        forms = {form for s in self._secrets if len(s) >= MIN_SCRUB_LENGTH for form in _forms(s)}
        self._longest = max(map(len, forms), default=0)
        if not forms:
            self._finder = None
            return
        from ahocorasick_rs import (  # noqa: PLC0415  (only with secrets)
            BytesAhoCorasick,
            Implementation,
            MatchKind,
        )

        # Bytes, not str: a value from the environment may hold a lone surrogate (an undecodable
        # byte), which the str automaton refuses. UTF-8 keeps matches on character boundaries.
        # A contiguous NFA, not the DFA the library picks for few patterns: building that DFA
        # takes time quadratic in a secret's length (a 20,000-character key: 16 s, on the
        # loop, at every reload), and searching output is no slower this way.
        patterns = [_encode(form) for form in sorted(forms)]
        self._finder = BytesAhoCorasick(
            patterns,
            matchkind=MatchKind.LeftmostLongest,
            implementation=Implementation.ContiguousNFA,
        )

    def scrub(self, text: str) -> str:
        """`text` with each occurrence of each secret of 4 characters or more replaced by `***`."""
        if self._finder is None:
            return text
        data = _encode(text)
        matches = self._matches(data)
        if not matches:
            return text
        pieces: list[bytes] = []
        last = 0
        for _, start, end in matches:
            pieces += (data[last:start], _MASK_BYTES)
            last = end
        pieces.append(data[last:])
        return b"".join(pieces).decode("utf-8", "surrogatepass")

    @property
    def longest(self) -> int:
        """The length of the longest text `scrub` replaces (0: none): text scrubbed in pieces
        hides every secret if each piece but the last keeps back its last `longest - 1`
        characters for the next (and is not cut within a secret)."""
        return self._longest

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where in `text` the secrets `scrub` would replace are: (start, end) of each."""
        data = _encode(text)
        spans: list[tuple[int, int]] = []
        last_byte = last_char = 0
        for _, start, end in self._matches(data):
            begin = last_char + _characters(data[last_byte:start])
            last_char = begin + _characters(data[start:end])
            last_byte = end
            spans.append((begin, last_char))
        return spans

    def redact(self, obj: Any) -> Any:
        """A deep copy of a mapping/list tree in which a string that is a secret, or contains one of
        4 characters or more, becomes `***`, and so does any non-empty value under a secret-looking
        key (`password`, `token`, `api_key`, ...)."""
        if isinstance(obj, str):
            return MASK if self.holds(obj) else obj
        if isinstance(obj, Mapping):
            return {
                key: MASK if is_secret_key(key) and _present(value) else self.redact(value)
                for key, value in obj.items()
            }
        if isinstance(obj, list | tuple):
            items = [self.redact(value) for value in obj]
            return items if isinstance(obj, list) else tuple(items)
        return copy.deepcopy(obj)

    def holds(self, text: str) -> bool:
        """Whether `text` is a secret, or holds one of 4 characters or more (what `redact` masks)."""
        return text in self._secrets or bool(self._matches(_encode(text)))

    def _matches(self, data: bytes) -> list[tuple[int, int, int]]:
        """(secret, start, end) of each secret `scrub` replaces in `data`, in bytes."""
        return [] if self._finder is None else self._finder.find_matches_as_indexes(data)


_MASK_BYTES = MASK.encode()


def _forms(secret: str) -> set[str]:
    """`secret` as text may show it: as it is and as Python's `repr` writes it inside its quotes
    (a module that prints `repr(value)` or logs `%r`: backslashes and non-printable characters
    escaped), each also as a JSON log line shows it (a quote, a backslash or a control character
    escaped)."""
    shown = {
        secret,
        repr(secret)[1:-1],  # alone: with a `'` and no `"`, quoted with `"`, the `'` as it is
        repr('"' + secret)[2:-1],  # in a string that holds a `"` too: every `'` escaped
    }
    return shown | {json.dumps(form, ensure_ascii=False)[1:-1] for form in shown}


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _characters(data: bytes) -> int:
    """How many characters these whole UTF-8 (surrogatepass) characters are."""
    return len(data.decode("utf-8", "surrogatepass"))


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
