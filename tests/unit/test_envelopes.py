"""The one envelope builder that the SDK's bus and the supervisor's own events share: ids,
per-topic numbering, size checks that count nothing they refuse, and the syncs."""

from __future__ import annotations

import pytest

from module_sdk.codec import decode_envelope, decode_sync_first
from module_sdk.envelopes import PACKER_KEEPS, Envelopes
from module_sdk.protocol import SYNC_SUFFIX


def test_events_are_numbered_per_topic_with_ids_of_the_publisher() -> None:
    envelopes = Envelopes("mod", "1a-abc-")
    a1 = decode_envelope(envelopes.pack("a.x", b"a.x", {"n": 1}))
    assert envelopes.last_id == "1a-abc-1"
    a2 = decode_envelope(envelopes.pack("a.x", b"a.x", None))
    b1 = decode_envelope(envelopes.pack("b.x", b"b.x", [1], source="cli"))
    assert [(e[0], e[1], e[3], e[4]) for e in (a1, a2, b1)] == [
        ("mod", "1a-abc-1", {"n": 1}, 1),
        ("mod", "1a-abc-2", None, 2),
        ("cli", "1a-abc-3", [1], 1),
    ]
    assert a1[2] <= a2[2] <= b1[2]


def test_what_is_refused_is_not_counted() -> None:
    envelopes = Envelopes("mod", "p-", max_message_size=PACKER_KEEPS + 1000)
    with pytest.raises(TypeError, match="not msgpack-serialisable"):
        envelopes.pack("a.x", b"a.x", object())
    with pytest.raises(ValueError, match="over the bus's max_message_size"):
        envelopes.pack("a.x", b"a.x", b"x" * (PACKER_KEEPS + 2000))
    assert envelopes.syncs() == []  # nothing was sent on a.x
    big = envelopes.pack("a.x", b"a.x", b"x" * (PACKER_KEEPS + 10))  # large, within the limit
    assert decode_envelope(big)[4] == 1
    assert decode_envelope(envelopes.pack("a.x", b"a.x", 1))[4] == 2


def test_syncs_say_the_last_number_and_when_the_first_was_sent() -> None:
    envelopes = Envelopes("orchestrator", "9-sup-")
    first = decode_envelope(envelopes.pack("a.x", b"a.x", 1))[2]
    envelopes.pack("a.x", b"a.x", 2)
    [(topic, body)] = envelopes.syncs()
    prefix, seq, _, began = decode_sync_first(body)
    assert (topic, prefix, seq, began) == (b"a.x" + SYNC_SUFFIX, "9-sup-", 2, first)
