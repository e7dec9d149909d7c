"""How event types and export patterns map onto NATS subjects (pure functions).

Events go to `<name>.ev.<type>`, and the sequence syncs of a type to `<name>.ev.<type>.~sync`: in
one subject tree, so one subscription (`<name>.ev.>`) takes both in the order they were sent (a
sync that overtook its event would count that event as dropped). An event type holds only
letters, digits, `_`, `-` and dots (the SDK refuses any other), all of which a NATS subject
carries, so each of its dot-separated parts is one subject token, and `~sync` is never one.
"""

from __future__ import annotations

from module_sdk.event import Pattern

EVENTS = "ev"
SYNCS = "sync"
SYNC_TOKEN = "~sync"  # the last token of a sync's subject: no event type has a `~`
HOSTS = "host"  # announcements: `<name>.host.<host>`
CONTROL = "ctl"  # requests to one host's supervisor: `<name>.ctl.<host>`


def event_subject(name: str, event_type: str) -> str:
    """The subject of an event: `orders.created` -> `<name>.ev.orders.created`."""
    return f"{name}.{EVENTS}.{event_type}"


def sync_subject(name: str, event_type: str) -> str:
    """The subject of a sequence sync of `event_type`: `<name>.ev.<type>.~sync`."""
    return f"{name}.{EVENTS}.{event_type}.{SYNC_TOKEN}"


def pattern_subject(name: str, pattern: str) -> str:
    """The subscription subject of an export pattern (its syncs included): `x.*` ->
    `<name>.ev.x.>`, `*` -> `<name>.ev.>`, an exact type -> its subject and its syncs'
    (`<name>.ev.<type>.>` would miss the events: the exact subject is returned, and syncs of an
    exact type need `sync_subject`). Raises ValueError for an invalid pattern."""
    parsed = Pattern.parse(pattern)
    if parsed.exact is not None:
        return event_subject(name, parsed.exact)
    prefix = parsed.zmq_prefix.decode()
    return f"{name}.{EVENTS}.{prefix}>"


def type_of(name: str, subject: str) -> tuple[str, str] | None:
    """`(kind, event type)` of a subject under `<name>.ev.`, kind EVENTS or SYNCS, or None if it
    is not one of ours."""
    head = f"{name}.{EVENTS}."
    if not subject.startswith(head):
        return None
    event_type = subject[len(head) :]
    if event_type == SYNC_TOKEN:
        return None
    if event_type.endswith(f".{SYNC_TOKEN}"):
        event_type = event_type[: -len(SYNC_TOKEN) - 1]
        return (SYNCS, event_type) if event_type else None
    return (EVENTS, event_type) if event_type else None


def host_subject(name: str, host: str) -> str:
    """Where `host` announces itself (`>` for every host: a host name may hold dots)."""
    return f"{name}.{HOSTS}.{host}"


def control_subject(name: str, host: str) -> str:
    """Where `host`'s bridge takes control requests for its supervisor."""
    return f"{name}.{CONTROL}.{host}"


def inbox_prefix(name: str, host: str) -> str:
    """The reply subjects of `host`'s requests to others: `_INBOX.<name>.<host>`, so that NATS
    permissions can keep each host's replies to itself."""
    return f"_INBOX.{name}.{host}"
