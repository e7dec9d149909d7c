"""Grouped delivery at its edges, with a real broker process: events that arrive after an
unsubscribe are given back, not acknowledged unrun; a member that never reads is dropped."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from group_net import GroupNet, group_net
from helpers import wait_until

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
        assert len(ran) == 1
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
