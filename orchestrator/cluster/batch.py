"""How the bridge packs several events of one subject into one NATS message (pure functions).

A NATS message costs a Python client far more than the event it carries (parsing, a message
object, a queue, a task switch), so the bridge sends what it already has queued for one subject
together: a message with the `Orch-Batch: <count>` header holds a msgpack array of that many
envelopes (sequence syncs, on a `.~sync` subject), each as `bin`: the exact bytes a message of
one event would carry. A message without that header is one envelope (or sync), as before. Nothing waits to fill a batch: the bridge only groups
events that were queued when it woke up, so a lone event leaves alone and at once.

Only consecutive events of one subject are grouped, so the order of all events (across subjects
too) is what it was on the local bus.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import msgpack

from module_sdk.codec import BadFrameError

BATCH_HEADER = "Orch-Batch"  # its value: how many envelopes the message holds
BATCH_BYTES = 64 << 10  # envelope bytes per message at most (a lone larger event goes alone)
BATCH_EVENTS = 1000  # envelopes per message at most

_packb = msgpack.packb
_unpackb = msgpack.unpackb


def runs(
    items: Sequence[tuple[str, bytes]],
    max_bytes: int = BATCH_BYTES,
    max_events: int = BATCH_EVENTS,
) -> Iterator[tuple[str, list[bytes]]]:
    """`(subject, bodies)` for each run of consecutive items with one subject, split where a run
    would exceed `max_bytes` of bodies or `max_events` of them; order kept."""
    subject = ""
    bodies: list[bytes] = []
    size = 0
    for item_subject, body in items:
        if bodies and (
            item_subject != subject or size + len(body) > max_bytes or len(bodies) >= max_events
        ):
            yield subject, bodies
            bodies, size = [], 0
        subject = item_subject
        bodies.append(body)
        size += len(body)
    if bodies:
        yield subject, bodies


def pack(bodies: Sequence[bytes]) -> bytes:
    """One batch payload of `bodies` (envelopes)."""
    return _packb(bodies, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(payload: bytes, count: str) -> list[bytes]:
    """The envelopes of a batch payload whose header said `count`; raises BadFrameError if it is
    not an array of exactly that many `bin` items (their content is checked later, each alone)."""
    try:
        expected = int(count)
        # The payload is at most the server's max_payload, and each bin costs a byte at least:
        # no element count or length in it can claim more than that.
        bodies = _unpackb(payload, max_ext_len=0)
    except Exception as exc:  # msgpack raises many types for malformed input: all "bad frame"
        raise BadFrameError(f"not a batch: {type(exc).__name__}: {exc}") from None
    if type(bodies) is not list or len(bodies) != expected:
        raise BadFrameError(f"not a batch of {count} envelopes")
    for body in bodies:
        if type(body) is not bytes:
            raise BadFrameError("a batch holds envelopes as bin items only")
    return bodies
