"""Encoding and decoding of bus envelopes, with explicit limits on what a frame may claim."""

from __future__ import annotations

from typing import Any

import msgpack

from module_sdk.protocol import ENVELOPE_FIELDS

_unpackb = msgpack.unpackb  # raw=False and use_list=True are its defaults


class BadFrameError(ValueError):
    """A frame on the bus that is not a valid envelope. The SDK drops and counts these."""


def encode_envelope(
    source: str,
    event_id: str,
    time: float,
    data: Any,
    seq: int = 0,
    *,
    packer: msgpack.Packer | None = None,
) -> bytes:
    """Pack an envelope; raise TypeError if `data` is not msgpack-serialisable. `seq` numbers the
    publisher's events of this topic from 1 (0 when it does not count them). A `packer` of the
    caller's (used by one thread at a time) saves creating one per call."""
    try:
        if packer is not None:
            return packer.pack((source, event_id, time, data, seq))  # type: ignore[no-any-return]
        return msgpack.packb((source, event_id, time, data, seq))  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"event data is not msgpack-serialisable: {exc}") from None


def decode_envelope(body: bytes) -> tuple[str, str, float, Any, int]:
    """Unpack an envelope as `(source, id, time, data, seq)`; raise BadFrameError if it is not.

    Every call unpacks from scratch (no shared Unpacker, so one bad frame cannot poison the next),
    and no container or string in the frame may claim more entries or bytes than the frame holds
    (unpackb's max_*_len limits default to the frame's length).
    """
    try:
        value = _unpackb(body, strict_map_key=False)
    except Exception as exc:  # msgpack raises many types for malformed input; all mean "bad frame"
        raise BadFrameError(f"not a msgpack envelope: {type(exc).__name__}: {exc}") from None
    # Exact type checks, the common case first: this runs for every event, and a subclass
    # cannot come out of msgpack.
    if type(value) is list and len(value) == ENVELOPE_FIELDS:
        source, event_id, time, data, seq = value
        if (
            type(source) is str
            and type(event_id) is str
            and type(time) is float
            and type(seq) is int
        ):
            return source, event_id, time, data, seq
        return _checked(source, event_id, time, data, seq)
    raise BadFrameError(f"envelope is not a {ENVELOPE_FIELDS}-element array")


def _checked(
    source: object, event_id: object, time: object, data: Any, seq: object
) -> tuple[str, str, float, Any, int]:
    if type(source) is not str or type(event_id) is not str:
        raise BadFrameError("envelope source and id must be strings")
    if type(time) is not float:
        if type(time) is not int:
            raise BadFrameError("envelope time must be a number")
        time = float(time)
    if type(seq) is not int:
        raise BadFrameError("envelope seq must be an integer")
    return source, event_id, time, data, seq
