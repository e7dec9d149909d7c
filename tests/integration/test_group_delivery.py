"""Grouped delivery at its edges, with a real broker process: events that arrive after an
unsubscribe are given back, not acknowledged unrun; a member that never reads is dropped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import zmq
from group_net import GroupNet, group_net
from helpers import Recorder, wait_until

from module_sdk import groups
from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event


@pytest.fixture(scope="module")
def net() -> Iterator[GroupNet]:
    with group_net() as groups:
        yield groups


def test_events_arriving_after_an_unsubscribe_are_redelivered_not_acknowledged(
    net: GroupNet,
) -> None:
    """The member holds 8 (its credit) when the callback, stuck in the first, is unsubscribed:
    the 7 others never ran, so the broker must get them back (redeliver) and not an ack."""
    bus = ZmqEventBus(net.ctx, "leaver", net.xsub, net.xpub, groups_endpoint=net.groups)
    ran: list[Event] = []
    release = threading.Event()

    def slow(event: Event) -> None:
        ran.append(event)
        release.wait(30.0)

    try:
        bus.subscribe("unsub.*", slow, group="unsub", redeliver=True)
        bus.handshake(10.0)
        bus.start()
        for n in range(10):
            net.client.publish("unsub.job", {"n": n})
        wait_until(lambda: net.stats("unsub").get("in_flight") == 8, 10.0, "8 in flight")
        wait_until(lambda: len(ran) == 1, 10.0, "the first callback running")
        bus.unsubscribe("unsub.*", slow, group="unsub")
        release.set()

        def settled() -> bool:
            stats = net.stats("unsub")
            return stats["members"] == 0 and stats["acked"] + stats["queued"] == 10

        wait_until(settled, 10.0, "the member gone and every event acked or queued")
        stats = net.stats("unsub")
        assert len(ran) == 1
        assert (stats["acked"], stats["queued"], stats["lost"]) == (1, 9, 0), stats
        assert stats["redelivered"] == 8  # the 7 never run, and the one its ack let out
    finally:
        release.set()
        bus.close()


def _until_joined(sock: zmq.Socket[bytes], group: bytes) -> list[list[bytes]]:
    """Read everything `sock` was sent up to the broker's confirmation of a join of `group`."""
    got: list[list[bytes]] = []
    while sock.poll(10_000):
        frames = sock.recv_multipart()
        got.append(frames)
        if frames[:2] == [b"J", group]:
            return got
    pytest.fail(f"no confirmation of the join of {group!r}")


def test_a_peer_asking_for_the_counters_without_reading_gets_few_answers(net: GroupNet) -> None:
    asker = net.raw()
    try:
        for _ in range(5000):
            asker.send(b"S")
        asker.send_multipart([b"J", b"flood-marker", b"marker.x", b"1", b"-"])  # after them all
        answers = [f for f in _until_joined(asker, b"flood-marker") if f[0] == b"S"]
        assert 1 <= len(answers) <= 200  # not 5000: they are coalesced, ten a second at most
        asker.send(b"B")
        assert net.stats("flood-marker")["members"] in (0, 1)  # the broker answers others
    finally:
        asker.close()


def test_a_member_that_never_reads_is_dropped_and_its_events_redelivered(net: GroupNet) -> None:
    """Its queue at the broker fills (join confirmations, here): the next send finds it full,
    and the broker drops it instead of queueing without bound."""
    stuck = net.ctx.socket(zmq.DEALER)
    stuck.setsockopt(zmq.LINGER, 0)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.connect(net.groups)
    try:
        stuck.send_multipart([b"J", b"stuck", b"stuck.*", b"8", b"r"])
        wait_until(lambda: net.stats("stuck").get("members") == 1, 10.0, "joined")
        for n in range(8):
            net.client.publish("stuck.job", {"n": n})
        wait_until(lambda: net.stats("stuck").get("in_flight") == 8, 10.0, "8 in flight")

        def dropped() -> bool:  # kernel buffers hold thousands: as many as it takes
            for _ in range(5000):  # each confirmed, never read
                stuck.send_multipart([b"J", b"stuck", b"stuck.*", b"8", b"r"])
            stats = net.stats("stuck")
            return stats["redelivered"] >= 8 and stats["in_flight"] == 0

        wait_until(dropped, 30.0, "the member dropped, its events queued again")
        assert net.stats("stuck")["lost"] == 0
    finally:
        stuck.close()


def test_a_refused_join_is_tried_again_until_the_broker_has_room(
    net: GroupNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in this file: it fills the broker's table of groups. The member is in another group
    as well, so that the broker's pings keep it from joining everything again anyway."""
    monkeypatch.setattr(groups, "RETRY_REFUSED", 0.2)
    fillers = [net.raw() for _ in range(33)]  # 33 x 32 joins: more than the 1,024 groups
    bus = ZmqEventBus(net.ctx, "patient", net.xsub, net.xpub, groups_endpoint=net.groups)
    got = Recorder()
    try:
        bus.subscribe("patient.other", got, group="patient-other")
        bus.handshake(10.0)
        bus.start()
        for n, filler in enumerate(fillers):
            for k in range(32):
                filler.send_multipart([b"J", b"fill-%d-%d" % (n, k), b"fill.x", b"1", b"-"])
        for filler in fillers:  # every join answered, taken or refused
            answers = 0
            while answers < 32 and filler.poll(10_000):
                answers += filler.recv_multipart()[0] in (b"J", b"X")
            assert answers == 32
        refused = net.stats()["refused"]
        bus.subscribe("patient.*", got, group="patient")
        wait_until(lambda: net.stats()["refused"] > refused, 10.0, "the join refused")
        assert net.stats("patient") == {}  # not in the table
        fillers[0].send(b"B")  # 32 groups without members: room
        wait_until(lambda: net.stats("patient").get("members") == 1, 10.0, "joined at last")
        net.client.publish("patient.job", {"n": 1})
        wait_until(lambda: got.got("patient.job"), 10.0, "delivered")
    finally:
        bus.close()
        for filler in fillers:
            filler.send(b"B")
            filler.close()
