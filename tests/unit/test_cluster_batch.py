"""Grouping events of one subject into batch messages, and reading them back."""

from __future__ import annotations

import msgpack
import pytest

from module_sdk.codec import BadFrameError
from orchestrator.cluster.batch import pack, runs, unpack


def test_runs_group_consecutive_items_of_one_subject_and_keep_the_order() -> None:
    items = [("a", b"1"), ("a", b"2"), ("b", b"3"), ("a", b"4"), ("a", b"5")]
    assert list(runs(items)) == [("a", [b"1", b"2"]), ("b", [b"3"]), ("a", [b"4", b"5"])]


def test_runs_split_at_the_byte_and_event_limits() -> None:
    items = [("a", b"x" * 4)] * 5
    assert [len(bodies) for _, bodies in runs(items, max_bytes=8)] == [2, 2, 1]
    assert [len(bodies) for _, bodies in runs(items, max_events=3)] == [3, 2]
    assert [len(bodies) for _, bodies in runs([("a", b"y" * 20), *items], max_bytes=8)] == [
        1,
        2,
        2,
        1,
    ]  # a body larger than the limit goes alone


def test_runs_of_nothing_are_none() -> None:
    assert list(runs([])) == []


def test_a_batch_reads_back_as_its_envelopes() -> None:
    bodies = [b"\x95first", b"", b"\x95third" * 100]
    assert unpack(pack(bodies), "3") == bodies


@pytest.mark.parametrize(
    ("payload", "count"),
    [
        (pack([b"a", b"b"]), "3"),  # fewer than the header says
        (pack([b"a", b"b"]), "two"),  # a count that is not a number
        (msgpack.packb(["a", "b"]), "2"),  # strings, not bin
        (msgpack.packb({"a": b"b"}), "1"),  # not an array
        (b"\xdd\xff\xff\xff\xff", "1"),  # claims more than it holds
        (msgpack.packb([b"a"]) + b"\x00", "1"),  # trailing bytes
    ],
)
def test_what_is_not_a_batch_of_that_many_envelopes_is_a_bad_frame(
    payload: bytes, count: str
) -> None:
    with pytest.raises(BadFrameError):
        unpack(payload, count)
