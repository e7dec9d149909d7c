"""How event types and export patterns map onto NATS subjects (pure functions).

Events go to `<name>.ev.<type>`, sequence syncs to `<name>.sync.<type>`. An event type holds only
letters, digits, `_`, `-` and dots (the SDK refuses any other), all of which a NATS subject
carries, so each of its dot-separated parts is one subject token.
"""

from __future__ import annotations

from module_sdk.event import Pattern

EVENTS = "ev"
SYNCS = "sync"
HOSTS = "host"  # announcements: `<name>.host.<host>`
CONTROL = "ctl"  # requests to one host's supervisor: `<name>.ctl.<host>`


def event_subject(name: str, event_type: str) -> str:
    """The subject of an event: `orders.created` -> `<name>.ev.orders.created`."""
    return f"{name}.{EVENTS}.{event_type}"


def sync_subject(name: str, event_type: str) -> str:
    """The subject of a sequence sync of `event_type`: `<name>.sync.<type>`."""
    return f"{name}.{SYNCS}.{event_type}"


def pattern_subject(name: str, pattern: str, kind: str = EVENTS) -> str:
    """The subscription subject of an export pattern: `x.*` -> `<name>.ev.x.>`, `*` ->
    `<name>.ev.>`, an exact type -> its own subject. Raises ValueError for an invalid pattern."""
    parsed = Pattern.parse(pattern)
    if parsed.exact is not None:
        return f"{name}.{kind}.{parsed.exact}"
    prefix = parsed.zmq_prefix.decode()
    return f"{name}.{kind}.{prefix}>"


def type_of(name: str, subject: str) -> tuple[str, str] | None:
    """`(kind, event type)` of a subject under `<name>.`, or None if it is not one of ours."""
    head = f"{name}."
    if not subject.startswith(head):
        return None
    kind, _, event_type = subject[len(head) :].partition(".")
    if kind not in (EVENTS, SYNCS) or not event_type:
        return None
    return kind, event_type


def host_subject(name: str, host: str) -> str:
    """Where `host` announces itself (`>` for every host: a host name may hold dots)."""
    return f"{name}.{HOSTS}.{host}"


def control_subject(name: str, host: str) -> str:
    """Where `host`'s bridge takes control requests for its supervisor."""
    return f"{name}.{CONTROL}.{host}"
