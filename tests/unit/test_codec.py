"""Tests of module_sdk.codec: envelope round trips, and that every malformed frame is a BadFrameError."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from typing import Any

import msgpack
import pytest

from module_sdk.codec import (
    MAX_ID,
    MAX_SOURCE,
    MAX_TIME,
    BadFrameError,
    decode_envelope,
    decode_sync,
    decode_sync_first,
    encode_envelope,
    encode_sync,
)

GOOD = encode_envelope("src", "id-1", 1700000000.25, {"k": [1, 2, b"\x00"]})


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"a": 1, "b": "two"},
        [1, "x", None, 2.5, True],
        b"\x00\xff\x10",
        {"outer": {"inner": [b"bin", {"deep": [None, [1, [2, [3]]]]}]}},
        {1: "int key", "s": -1},
        "",
        0,
        -(2**63),
        2**64 - 1,
        3.14,
        False,
        [],
        {},
    ],
)
def test_round_trip(data: Any) -> None:
    body = encode_envelope("mod", "abc-1", 1234.5, data)
    assert isinstance(body, bytes)
    assert decode_envelope(body) == ("mod", "abc-1", 1234.5, data, 0)


def test_tuples_come_back_as_lists() -> None:
    body = encode_envelope("mod", "id", 1.0, (1, (2, 3)))
    assert decode_envelope(body)[3] == [1, [2, 3]]


def test_tuple_keys_come_back_as_tuples_not_a_bad_frame() -> None:
    """msgpack packs a tuple key as an array; unpacked as a list it is unhashable, and every
    subscriber dropped the event as a bad frame, counted a gap, while publish() said nothing."""
    data = {(1, 2): "a", ("x", (3, (4,))): [(5, 6), {(7,): 8}], "plain": {9: 10}}
    got = decode_envelope(encode_envelope("mod", "id", 1.0, data, 3))
    assert got == ("mod", "id", 1.0, {**data, ("x", (3, (4,))): [[5, 6], {(7,): 8}]}, 3)
    big = {(n, n): "x" * 100 for n in range(2000)}  # over the size that counts what it builds
    assert decode_envelope(encode_envelope("mod", "id", 1.0, big))[3] == big


def test_a_map_as_a_key_is_still_a_bad_frame() -> None:
    body = msgpack.packb(["mod", "id", 1.0, None, 0])[:-2] + b"\x81\x81\x01\x02\x03\x00"
    with pytest.raises(BadFrameError, match="unhashable"):
        decode_envelope(body)


def test_integer_time_comes_back_as_float() -> None:
    body = msgpack.packb(["mod", "id", 42, None, 0])
    _, _, time, _, _ = decode_envelope(body)
    assert time == 42.0
    assert type(time) is float


@pytest.mark.parametrize(
    "data",
    [object(), {1, 2}, {"nested": [object()]}, 2**64, -(2**63) - 1, {"s": frozenset()}],
    ids=["object", "set", "nested-object", "too-big-int", "too-small-int", "nested-frozenset"],
)
def test_encode_unserialisable_raises_type_error(data: Any) -> None:
    with pytest.raises(TypeError, match="not msgpack-serialisable"):
        encode_envelope("mod", "id", 1.0, data)


def test_encode_self_referencing_data_raises_type_error() -> None:
    data: list[Any] = []
    data.append(data)
    with pytest.raises(TypeError):
        encode_envelope("mod", "id", 1.0, data)


def _decode_or_bad_frame(body: bytes) -> tuple[str, str, float, Any, int] | None:
    """Decode `body`; None if it is a BadFrameError. Anything else propagates and fails the test."""
    try:
        result = decode_envelope(body)
    except BadFrameError:
        return None
    source, event_id, time, _, seq = result
    assert type(seq) is int
    assert isinstance(source, str)
    assert isinstance(event_id, str)
    assert isinstance(time, float)
    return result


def test_random_bytes_raise_only_bad_frame_error() -> None:
    rng = random.Random(0)
    frames = [rng.randbytes(rng.randint(0, 200)) for _ in range(500)]
    others = []
    for frame in frames:
        try:
            decode_envelope(frame)
        except BadFrameError:
            continue
        except Exception as exc:
            others.append((frame.hex(), f"{type(exc).__name__}: {exc}"))
            continue
        others.append((frame.hex(), "decoded"))
    assert others == []


def test_mutated_envelopes_raise_only_bad_frame_error_or_decode() -> None:
    rng = random.Random(0)
    bad = 0
    for _ in range(500):
        frame = bytearray(GOOD)
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if _decode_or_bad_frame(bytes(frame)) is None:
            bad += 1
    assert bad > 0


@pytest.mark.parametrize("length", range(len(GOOD)))
def test_truncated_envelopes_are_bad_frames(length: int) -> None:
    with pytest.raises(BadFrameError):
        decode_envelope(GOOD[:length])


@pytest.mark.parametrize(
    "value",
    [
        ["src", "id", 1.0, None],
        ["src", "id", 1.0, None, 0, "extra"],
        [],
        {"source": "src", "id": "id", "time": 1.0, "data": None},
        "just a string",
        42,
        None,
        [1, "id", 1.0, None, 0],
        ["src", 2, 1.0, None, 0],
        [b"src", "id", 1.0, None, 0],
        ["src", "id", "1.0", None, 0],
        ["src", "id", True, None, 0],
        ["src", "id", None, None, 0],
        ["src", "id", [1.0], None, 0],
        ["src", "id", 1.0, None, "1"],
        ["src", "id", 1.0, None, 1.0],
    ],
    ids=[
        "4-elements",
        "6-elements",
        "empty-array",
        "map",
        "str",
        "int",
        "nil",
        "source-int",
        "id-int",
        "source-bytes",
        "time-str",
        "time-bool",
        "time-nil",
        "time-list",
        "seq-str",
        "seq-float",
    ],
)
def test_wrong_shapes_and_field_types_are_bad_frames(value: Any) -> None:
    body = msgpack.packb(value)
    with pytest.raises(BadFrameError):
        decode_envelope(body)


@pytest.mark.parametrize(
    "body",
    [
        b"\xdd" + (2**31).to_bytes(4, "big") + b"\x00" * 5,  # array32 of 2**31 items, 10 bytes
        b"\xdc\xff\xff" + b"\xc0" * 7,  # array16 of 65535 nils
        b"\xdf" + (2**31).to_bytes(4, "big") + b"\x00" * 5,  # map32 of 2**31 pairs
        b"\xdb\xff\xff\xff\xff" + b"abcde",  # str32 of 4 GiB
        b"\xda\xff\xff" + b"abc",  # str16 of 65535 bytes
        b"\xc6\xff\xff\xff\xff" + b"abcde",  # bin32 of 4 GiB
        b"\xc9\xff\xff\xff\xff\x01" + b"abcd",  # ext32 of 4 GiB
        b"\x95\xa3src\xa2id\xcb"
        + b"\x00" * 8
        + b"\xdd\x7f\xff\xff\xff",  # data claims 2**31-1 items
        b"\x95\xdb\xff\xff\xff\xff",  # source claims 4 GiB
    ],
    ids=["array32", "array16", "map32", "str32", "str16", "bin32", "ext32", "nested", "source"],
)
def test_headers_claiming_more_than_the_frame_holds_are_bad_frames(body: bytes) -> None:
    with pytest.raises(BadFrameError):
        decode_envelope(body)


@pytest.mark.parametrize(
    "bad",
    [GOOD[:5], GOOD[:-1], GOOD + GOOD, GOOD + b"\x00", b"\xc1", b"\x94", b""],
    ids=[
        "prefix",
        "missing-last-byte",
        "two-envelopes",
        "trailing-byte",
        "never-used",
        "header",
        "empty",
    ],
)
def test_decoding_is_independent_between_calls(bad: bytes) -> None:
    with pytest.raises(BadFrameError):
        decode_envelope(bad)
    assert decode_envelope(GOOD) == ("src", "id-1", 1700000000.25, {"k": [1, 2, b"\x00"]}, 0)
    # and the rest of a split envelope is not completed by a previous call's leftovers
    with pytest.raises(BadFrameError):
        decode_envelope(GOOD[5:])
    assert decode_envelope(GOOD)[0] == "src"


def test_bad_frame_error_is_a_value_error() -> None:
    assert issubclass(BadFrameError, ValueError)


def _envelope_with(data_bytes: bytes, time: bytes = b"\xcb" + b"\x00" * 8) -> bytes:
    """An envelope whose `data` is the raw msgpack `data_bytes` (built by hand, as a hostile
    peer would)."""
    return b"\x95\xa3src\xa3x-1" + time + data_bytes + b"\x00"


@pytest.mark.parametrize(
    "data",
    [msgpack.ExtType(5, b"xy"), msgpack.ExtType(1, b""), msgpack.Timestamp(1, 0)],
    ids=["ext", "empty-ext", "timestamp"],
)
def test_extension_types_are_bad_frames(data: Any) -> None:
    body = msgpack.packb(["src", "x-1", 1.0, {"nested": [data]}, 0])
    with pytest.raises(BadFrameError, match=r"max_ext_len|extension type"):
        decode_envelope(body)


@pytest.mark.parametrize(
    "time",
    [float("nan"), float("inf"), -float("inf"), 1e300, -1.0, MAX_TIME + 1, 2**63 - 1],
    ids=["nan", "inf", "-inf", "1e300", "negative", "after 9999", "huge int"],
)
def test_times_no_datetime_can_hold_are_bad_frames(time: float) -> None:
    """A forged 1e300 reached callbacks, where datetime.fromtimestamp(event.time) raised."""
    with pytest.raises(BadFrameError, match="Unix time from 0"):
        decode_envelope(msgpack.packb(["src", "x-1", time, None, 1]))
    if isinstance(time, float) and not 3.5e38 < abs(time) < float("inf"):  # fits a float32
        single = b"\xca" + msgpack.packb(time, use_single_float=True)[1:]  # float32 as float
        if not 0 <= struct.unpack(">f", single[1:])[0] <= MAX_TIME:
            with pytest.raises(BadFrameError, match="Unix time from 0"):
                decode_envelope(_envelope_with(b"\xc0", time=single))


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12", "UTC"])
def test_every_time_that_decodes_is_a_local_datetime_in_any_zone(zone: str) -> None:
    """The bound was 9999-12-31 23:59:59 UTC: east of UTC that is the year 10000 locally, and
    fromtimestamp() raised (a review)."""
    latest = decode_envelope(msgpack.packb(["src", "x-1", MAX_TIME, None, 1]))[2]
    earliest = decode_envelope(msgpack.packb(["src", "x-1", 0, None, 1]))[2]
    check = (
        "import datetime, sys; [datetime.datetime.fromtimestamp(float(t)) for t in sys.argv[1:]]"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, repr(latest), repr(earliest)],
        env={**os.environ, "TZ": zone},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with pytest.raises(BadFrameError):
        decode_envelope(msgpack.packb(["src", "x-1", MAX_TIME + 1, None, 1]))


_DECODE_EMPTY_ARRAYS = """
import resource, sys
from module_sdk.codec import BadFrameError, decode_envelope
count = 4_000_000
body = b"\\x95\\xa3src\\xa3x-1\\xcb" + bytes(8) + b"\\xdd" + count.to_bytes(4, "big")
body += b"\\x90" * count + b"\\x00"
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_envelope(body)
except BadFrameError as exc:
    print(exc, file=sys.stderr)
else:
    sys.exit("decoded")
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_a_frame_of_millions_of_empty_arrays_is_refused_within_a_bounded_memory() -> None:
    """4 MB of one-byte empty arrays decoded to 4 million lists: the peak RSS rose by 278 MB
    (measured as here, with msgpack.unpackb), at each subscriber. Now decoding stops at 16 times
    the frame's size plus 8 MiB in lists (72 MB), plus the outer list's pointers (32 MB,
    allocated up front for the claimed count): measured 92 MB. In a process of its own, for a
    clean peak."""
    result = subprocess.run(
        [sys.executable, "-c", _DECODE_EMPTY_ARRAYS],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "decodes to more than" in result.stderr
    assert int(result.stdout) < 130 << 20, f"peak RSS rose by {int(result.stdout) >> 20} MB"


@pytest.mark.parametrize(
    "data",
    [
        [{"id": n, "v": n * 0.5} for n in range(100_000)],  # rows: about 11 times the frame
        [[n * 0.5, n * 0.25] for n in range(100_000)],  # points
        ["x" * 100] * 100_000,  # strings are not containers
        list(range(1_000_000)),
        b"\x00" * (8 << 20),
        {str(n): n for n in range(100_000)},
    ],
    ids=["rows", "points", "strings", "ints", "bytes", "map"],
)
def test_large_honest_events_decode(data: Any) -> None:
    body = encode_envelope("src", "x-1", 1.0, data)
    assert len(body) > 64 << 10  # the checked path
    assert decode_envelope(body)[3] == data


def test_sync_round_trip() -> None:
    assert decode_sync(encode_sync("1a-2b3c4d-", 42, 1700000000.5)) == (
        "1a-2b3c4d-",
        42,
        1.7e9 + 0.5,
    )
    assert decode_sync(msgpack.packb(["p-", 3, 7])) == ("p-", 3, 7.0)
    assert decode_sync_first(encode_sync("p-", 3, 7.0, 5.0)) == ("p-", 3, 7.0, 5.0)
    assert decode_sync_first(encode_sync("p-", 3, 7.0)) == ("p-", 3, 7.0, None)
    assert decode_sync(encode_sync("p-", 3, 7.0, 5.0)) == ("p-", 3, 7.0)


@pytest.mark.parametrize(
    "value",
    [
        ["p-", 3],
        ["p-", 3, 1.0, 0, 0],
        ["p-", 3, 1.0, "0"],
        ["p-", 3, 1.0, float("nan")],
        ["p-", 0, 1.0],
        ["p-", -1, 1.0],
        ["p-", 1.5, 1.0],
        [b"p-", 3, 1.0],
        ["p-", 3, "1.0"],
        ["p-", 3, float("nan")],
        ["p-", 3, float("inf")],
        {"p-": 3},
    ],
)
def test_bad_syncs_are_bad_frames(value: Any) -> None:
    with pytest.raises(BadFrameError):
        decode_sync(msgpack.packb(value))


@pytest.mark.parametrize(
    ("source", "event_id"),
    [("s" * (MAX_SOURCE + 1), "p-1"), ("src", "i" * (MAX_ID + 1)), ("s", "x" * 900_000 + "-1")],
    ids=["source", "id", "900 KB id"],
)
def test_a_source_or_id_longer_than_any_publisher_makes_is_a_bad_frame(
    source: str, event_id: str
) -> None:
    """A peer sent ids of 900 KB: every subscriber kept each one's prefix for its sequence
    numbers (thousands of them: 18 MB -> 282 MB), and the cluster bridges died over their
    memory limit (a sweep)."""
    with pytest.raises(BadFrameError, match="too long"):
        decode_envelope(msgpack.packb([source, event_id, 1.0, None, 1]))
    assert decode_envelope(msgpack.packb(["s" * MAX_SOURCE, "i" * MAX_ID, 1.0, None, 1]))


def test_a_sync_with_a_prefix_longer_than_any_publisher_makes_is_a_bad_frame() -> None:
    with pytest.raises(BadFrameError, match=f"at most {MAX_ID} characters"):
        decode_sync(msgpack.packb(["p" * (MAX_ID + 1), 5, 1.0]))
    assert decode_sync(msgpack.packb(["p" * MAX_ID, 5, 1.0]))[1] == 5
