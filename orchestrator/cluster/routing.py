"""Which local topics leave for which NATS subjects, and which subjects come in as which local
topics: the bridge asks per event, so both answers are remembered (topics are few, but any can
be published: the caches are bounded)."""

from __future__ import annotations

from module_sdk.event import Pattern, validate_event_type
from module_sdk.protocol import INTERNAL_PREFIX, SYNC_SUFFIX
from orchestrator.cluster.subjects import SYNCS, event_subject, sync_subject, type_of

ROUTES = 4096  # topics (and subjects) whose route is remembered; past it, all are forgotten
BUILT_IN_SOURCE = "orchestrator"
# The route of a topic an export pattern matches but that is no valid event type (see `_route`).
INVALID: tuple[str, str | None] = ("", "invalid")


def is_built_in(source: str, event_type: str) -> bool:
    """Whether an event is one the supervisor publishes (it then crosses with the host named)."""
    return source == BUILT_IN_SOURCE and (
        event_type.startswith(("module.", "app.")) or event_type == "resources.usage"
    )


class Routing:
    """The routes of one cluster (`name`, its subject prefix) for the `export` patterns."""

    def __init__(self, name: str, patterns: list[Pattern]) -> None:
        self._name = name
        self.patterns = patterns  # what the local SUB subscribes to
        self._routes: dict[bytes, tuple[str, str | None]] = {}  # see _route
        self._topics: dict[str, bytes] = {}  # see _topic

    def route_of(self, topic: bytes) -> tuple[str, str | None]:
        route = self._routes.get(topic)
        return self._route(topic) if route is None else route

    def _route(self, topic: bytes) -> tuple[str, str | None]:
        """`(subject, built-in type)` of a local topic: the type if events of it from the
        supervisor are built-in ones (see is_built_in), "" if not, None for a sync; `("", None)`
        if the topic is not exported, INVALID if a pattern matches it but it is no valid event
        type. Remembered: topics are few, and this runs per event.

        The SDK publishes valid types only, but any ZeroMQ peer of the bus can send a frame: one
        of 5,000 characters made a subject over the server's `max_control_line`, for which it
        closed the connection. A valid type (255 characters at most) under a cluster name (a
        token of 64 at most) makes a subject of 330 characters at most."""
        route: tuple[str, str | None] = ("", None)
        sync = topic.endswith(SYNC_SUFFIX)
        # Not UTF-8: decoded all the same, to be matched, and refused as no valid type.
        event_type = (topic[:-1] if sync else topic).decode("utf-8", "replace")
        if not topic.startswith(INTERNAL_PREFIX) and any(
            pattern.matches(event_type) for pattern in self.patterns
        ):
            try:
                validate_event_type(event_type)
            except ValueError:
                route = INVALID
            else:
                route = self._exported(event_type, sync)
        if len(self._routes) >= ROUTES:
            self._routes.clear()  # any topic can be published: the cache must not grow forever
        self._routes[topic] = route
        return route

    def _exported(self, event_type: str, sync: bool) -> tuple[str, str | None]:
        """The route of a valid event type that an export pattern matches (see `_route`)."""
        if sync:
            return (sync_subject(self._name, event_type), None)
        built_in = event_type if is_built_in(BUILT_IN_SOURCE, event_type) else ""
        return (event_subject(self._name, event_type), built_in)

    def topic_of(self, subject: str) -> bytes:
        """The local topic of a subject from NATS (a sync's with SYNC_SUFFIX), b"" if it is
        not one of ours."""
        topic = self._topics.get(subject)
        return self._topic(subject) if topic is None else topic

    def _topic(self, subject: str) -> bytes:
        """The local topic of a subject (a sync's with SYNC_SUFFIX), b"" if it is not one of
        ours. Remembered, as `_route` is."""
        topic = b""
        parsed = type_of(self._name, subject)
        if parsed is not None:
            kind, event_type = parsed
            try:
                validate_event_type(event_type)
                topic = event_type.encode() + (SYNC_SUFFIX if kind == SYNCS else b"")
            except ValueError:
                pass
        if len(self._topics) >= ROUTES:
            self._topics.clear()
        self._topics[subject] = topic
        return topic
