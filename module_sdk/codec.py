"""Encoding and decoding of bus envelopes, with explicit limits on what a frame may claim."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import msgpack

from module_sdk.protocol import ENVELOPE_FIELDS, SYNC_FIELDS

_unpackb = msgpack.unpackb  # raw=False and use_list=True are its defaults
_getsizeof = sys.getsizeof
# What decoding a frame may build, in bytes of containers (lists and dicts, as sys.getsizeof
# counts them): a one-byte empty array is a 56-byte list, so a frame of them would cost 60 times
# its size. Frames up to _CHECKED_ABOVE bytes cannot exceed the limit and skip the count.
DECODED_PER_BYTE = 16
DECODED_BASE = 8 << 20
_CHECKED_ABOVE = 64 << 10
_INF = float("inf")
_NEG_INF = -_INF
# An event's time is a Unix time a datetime can hold in any time zone (up to 9999-12-30 UTC, so
# that UTC+14 is still 9999): a callback's `datetime.fromtimestamp(event.time)` must not raise on
# a forged 1e300.
MAX_TIME = 253402128000.0
# What a source or an event id may be, at most, in characters: a module's name is 64 at most, an
# SDK id some 30 ("<pid>-<random>-<n>", hex). Longer is forged: a subscriber keeps each id's
# prefix for its sequence numbers (thousands of them), and logs the source.
MAX_SOURCE = 128
MAX_ID = 128


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


def check_size(event_type: str, size: int, max_message_size: int) -> None:
    """Raise ValueError if an envelope of `size` bytes is over `max_message_size` (negative: no
    limit). The broker would refuse it by closing the publisher's connection: the event, and
    any that follow it before the reconnection, would be lost without a word."""
    if 0 <= max_message_size < size:
        raise ValueError(
            f"event {event_type!r} is {size} bytes packed, over the bus's max_message_size "
            f"of {max_message_size} bytes; it was not sent"
        )


def decode_envelope(body: bytes) -> tuple[str, str, float, Any, int]:
    """Unpack an envelope as `(source, id, time, data, seq)`; raise BadFrameError if it is not.

    Every call unpacks from scratch (no shared Unpacker, so one bad frame cannot poison the next),
    and no container or string in the frame may claim more entries or bytes than the frame holds
    (unpackb's max_*_len limits default to the frame's length). Extension types are refused (an
    event's data is plain msgpack), and so is a frame that would decode to more than
    DECODED_PER_BYTE times its size plus DECODED_BASE bytes of lists and dicts.
    """
    try:  # as _unpack() does, inline: this runs for every event
        if len(body) <= _CHECKED_ABOVE:
            value = _unpackb(body, strict_map_key=False, ext_hook=_no_ext, max_ext_len=0)
        else:
            value = _unpack_bounded(body)
    except BadFrameError:
        raise
    except Exception as exc:
        value = _unpack_tuple_keys(body, exc)
    # Exact type checks, the common case first: this runs for every event, and a subclass
    # cannot come out of msgpack.
    if type(value) is list and len(value) == ENVELOPE_FIELDS:
        source, event_id, time, data, seq = value
        if (
            type(source) is str
            and type(event_id) is str
            and type(time) is float
            and 0.0 <= time <= MAX_TIME  # (NaN compares false)
            and type(seq) is int
            and len(source) <= MAX_SOURCE
            and len(event_id) <= MAX_ID
        ):
            return source, event_id, time, data, seq
        return _checked(source, event_id, time, data, seq)
    raise BadFrameError(f"envelope is not a {ENVELOPE_FIELDS}-element array")


def encode_sync(prefix: str, seq: int, time: float, first: float | None = None) -> bytes:
    """Pack a publisher's sequence sync: its id prefix, the last seq it sent on a topic, now,
    and (if known) when it sent the topic's seq 1."""
    if first is None:
        return msgpack.packb((prefix, seq, time))  # type: ignore[no-any-return]
    return msgpack.packb((prefix, seq, time, first))  # type: ignore[no-any-return]


def decode_sync(body: bytes) -> tuple[str, int, float]:
    """Unpack a sequence sync as `(id prefix, seq, time)`; raise BadFrameError if it is not one."""
    return decode_sync_first(body)[:3]


def decode_sync_first(body: bytes) -> tuple[str, int, float, float | None]:
    """Unpack a sequence sync as `(id prefix, seq, time, first)`, `first` None if it does not
    say when seq 1 was sent; raise BadFrameError if it is not a sync."""
    value = _unpack(body)
    if type(value) is list and len(value) in (SYNC_FIELDS, SYNC_FIELDS + 1):
        prefix, seq, time, *rest = value
        first = rest[0] if rest else None
        if type(time) is int:
            time = float(time)
        if type(first) is int:
            first = float(first)
        finite = type(time) is float and _NEG_INF < time < _INF
        first_ok = first is None or (type(first) is float and _NEG_INF < first < _INF)
        short = type(prefix) is str and len(prefix) <= MAX_ID
        if short and type(seq) is int and seq > 0 and finite and first_ok:
            return prefix, seq, time, first
    raise BadFrameError(
        f"not a sequence sync: expected [id prefix of at most {MAX_ID} characters, seq > 0,"
        " finite time(s)]"
    )


def _unpack(body: bytes) -> Any:
    try:
        if len(body) <= _CHECKED_ABOVE:
            return _unpackb(body, strict_map_key=False, ext_hook=_no_ext, max_ext_len=0)
        return _unpack_bounded(body)
    except BadFrameError:
        raise
    except Exception as exc:  # msgpack raises many types for malformed input; all mean "bad frame"
        raise BadFrameError(f"not a msgpack envelope: {type(exc).__name__}: {exc}") from None


def _unpack_bounded(body: bytes, *, tuple_keys: bool = False) -> Any:
    """Unpack a large frame, counting the size of each list and dict as it is built (msgpack
    has no limit on the total): stop once they exceed the budget for a frame of this size.
    `tuple_keys`: map keys that come out as lists are rebuilt as the tuples they were."""
    budget = DECODED_PER_BYTE * len(body) + DECODED_BASE

    def count(container: Any) -> Any:
        nonlocal budget
        budget -= _getsizeof(container)
        if budget < 0:
            raise BadFrameError(
                f"a frame of {len(body)} bytes decodes to more than "
                f"{DECODED_PER_BYTE * len(body) + DECODED_BASE} bytes of lists and dicts"
            )
        return container

    def keyed(pairs: list[tuple[Any, Any]]) -> Any:
        return count({_as_key(key): value for key, value in pairs})

    hooks: dict[str, Any] = {"object_pairs_hook": keyed} if tuple_keys else {"object_hook": count}
    return _unpackb(
        body, strict_map_key=False, ext_hook=_no_ext, max_ext_len=0, list_hook=count, **hooks
    )


def _unpack_tuple_keys(body: bytes, error: Exception) -> Any:
    """Unpack a frame the fast path refused because a map key came out as a list (unhashable):
    a publisher's tuple key, `{(x, y): v}`, which msgpack packs as an array. Keys are rebuilt as
    the tuples they were; any other refusal (`error`) is a bad frame."""
    if not (type(error) is TypeError and "unhashable" in str(error)):
        raise BadFrameError(f"not a msgpack envelope: {type(error).__name__}: {error}") from None
    try:
        return _unpack_bounded(body, tuple_keys=True)
    except BadFrameError:
        raise
    except Exception as exc:  # a key that no tuple could have been (a map), nesting too deep
        raise BadFrameError(f"not a msgpack envelope: {type(exc).__name__}: {exc}") from None


def _as_key(key: Any) -> Any:
    return tuple(_as_key(item) for item in key) if type(key) is list else key


def _no_ext(code: int, data: bytes) -> NoReturn:
    # Only empty extensions get here: max_ext_len=0 refuses the others (and timestamps, which
    # msgpack decodes without asking the hook).
    raise ValueError(f"msgpack extension type {code}: not allowed in an event")


def _checked(
    source: object, event_id: object, time: object, data: Any, seq: object
) -> tuple[str, str, float, Any, int]:
    if type(source) is not str or type(event_id) is not str:
        raise BadFrameError("envelope source and id must be strings")
    if len(source) > MAX_SOURCE or len(event_id) > MAX_ID:
        raise BadFrameError(
            f"envelope source or id too long ({len(source)} and {len(event_id)} characters;"
            f" at most {MAX_SOURCE} and {MAX_ID})"
        )
    if type(time) is not float:
        if type(time) is not int:
            raise BadFrameError("envelope time must be a number")
        time = float(time)
    if not 0.0 <= time <= MAX_TIME:
        raise BadFrameError(
            f"envelope time must be a Unix time from 0 to {MAX_TIME:.0f}, got {time}"
        )
    if type(seq) is not int:
        raise BadFrameError("envelope seq must be an integer")
    return source, event_id, time, data, seq
