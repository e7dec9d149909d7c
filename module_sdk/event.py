"""Events, event-type names and subscription patterns."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
_EVENT_TYPE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})+")
_PREFIX_PATTERN = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*\.\*")
MAX_EVENT_TYPE_LENGTH = 255  # characters; also the longest subscription pattern
_SHOWN = 80  # characters of a bad value that an error message quotes


class Event(NamedTuple):
    """One event as a callback receives it (immutable; a named tuple, cheap to build per event).

    Attributes:
        type: the event type, `<namespace>.<action>`.
        data: the payload, as msgpack decoded it (dicts, lists, str, int, float, bool, None, bytes).
        source: the name of the module that published it (`orchestrator` for the supervisor).
        id: unique per event across the system.
        time: when it was published, in unix seconds.
    """

    type: str
    data: Any
    source: str
    id: str
    time: float


EventCallback = Callable[[Event], object]


def validate_event_type(event_type: object) -> str:
    """Return `event_type` if it is a valid `<namespace>.<action>` name, else raise ValueError."""
    if not isinstance(event_type, str):
        raise ValueError(f"event type must be a string, got {type(event_type).__name__}")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise ValueError(
            f"invalid event type {shown(event_type)}: "
            f"over the limit of {MAX_EVENT_TYPE_LENGTH} characters"
        )
    if not _EVENT_TYPE.fullmatch(event_type):
        raise ValueError(
            f"invalid event type {event_type!r}: expected '<namespace>.<action>' made of letters, "
            "digits, '_' and '-', like 'test.ping'"
        )
    return event_type


def shown(value: object) -> str:
    """`repr(value)`, cut to a readable length for an error message (with the full length)."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} as text"
    return f"{text[: _SHOWN - 20]}... ({size})"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A subscription pattern: an exact type (`test.ping`), a prefix (`test.*`) or everything (`*`).

    `zmq_prefix` is what the SUB socket subscribes to; `matches` is the exact check the SDK applies,
    since a ZeroMQ prefix of `test.ping` also lets `test.pingpong` through.
    """

    text: str
    zmq_prefix: bytes
    exact: str | None  # the exact type, or None for a prefix pattern

    @classmethod
    def parse(cls, pattern: object) -> Pattern:
        """Validate `pattern` and build it; raise ValueError with the accepted forms otherwise.

        A pattern is at most MAX_EVENT_TYPE_LENGTH characters, as an event type is: libzmq keeps
        subscriptions in a trie that it walks recursively, and a very long one crashes it."""
        if isinstance(pattern, str) and len(pattern) > MAX_EVENT_TYPE_LENGTH:
            raise ValueError(
                f"invalid subscription pattern {shown(pattern)}: "
                f"over the limit of {MAX_EVENT_TYPE_LENGTH} characters"
            )
        if pattern == "*":
            return cls("*", b"", None)
        if isinstance(pattern, str) and _PREFIX_PATTERN.fullmatch(pattern):
            return cls(pattern, pattern[:-1].encode(), None)
        if isinstance(pattern, str) and _EVENT_TYPE.fullmatch(pattern):
            return cls(pattern, pattern.encode(), pattern)
        raise ValueError(
            f"invalid subscription pattern {shown(pattern)}: expected an event type ('test.ping'), "
            "a prefix ('test.*') or '*'"
        )

    def matches(self, event_type: str) -> bool:
        """Whether an event of `event_type` is delivered to this pattern's callbacks."""
        if self.exact is not None:
            return event_type == self.exact
        return event_type.startswith(self.zmq_prefix.decode())
