"""What a group join may name: a group name and an event pattern, checked before the table
takes them, and how a pattern turns into the prefix a SUB socket filters on."""

from __future__ import annotations

import re

MAX_GROUP_NAME = 64  # bytes
MAX_PATTERN = 255  # bytes, as the SDK's patterns

_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.:#-]*")
_SEGMENT = rb"[A-Za-z0-9_][A-Za-z0-9_-]*"
_EXACT = re.compile(rb"%s(?:\.%s)+" % (_SEGMENT, _SEGMENT))
_PREFIX = re.compile(rb"%s(?:\.%s)*\.\*" % (_SEGMENT, _SEGMENT))


class JoinRefusedError(ValueError):
    """A join the table does not take: its message says why (sent back to the member)."""


def zmq_prefix(pattern: bytes) -> bytes:
    """The SUB prefix that lets every event of `pattern` through (and some others)."""
    if pattern == b"*":
        return b""
    return pattern[:-1] if pattern.endswith(b"*") else pattern


def matches(pattern: bytes, topic: bytes) -> bool:
    """Whether an event of type `topic` is one of `pattern`'s (exactly, not by prefix)."""
    if pattern == b"*":
        return True
    if pattern.endswith(b"*"):
        return topic.startswith(pattern[:-1])
    return topic == pattern


def check_join(name: bytes, pattern: bytes) -> None:
    """Raise JoinRefusedError, saying why, unless `name` and `pattern` are ones a join may use."""
    if not 0 < len(name) <= MAX_GROUP_NAME or not _NAME.fullmatch(name):
        raise JoinRefusedError(
            f"a group name is 1-{MAX_GROUP_NAME} letters, digits, '_', '.', ':', '#' or '-'"
        )
    if len(pattern) > MAX_PATTERN or not (
        pattern == b"*" or _EXACT.fullmatch(pattern) or _PREFIX.fullmatch(pattern)
    ):
        raise JoinRefusedError(
            "a pattern is an event type ('jobs.resize'), a prefix ('jobs.*') or '*'"
        )
