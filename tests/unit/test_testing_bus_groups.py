"""`InProcessBus` takes `group=` as the real bus does: one member of a group gets each event."""

from __future__ import annotations

import pytest
from helpers import Recorder

from module_sdk.testing import InProcessBus


def test_a_grouped_subscription_gets_each_event_once_beside_the_ungrouped() -> None:
    bus = InProcessBus()
    grouped, ungrouped = Recorder(), Recorder()
    bus.subscribe("jobs.*", grouped, group="resize", redeliver=True)
    bus.subscribe("jobs.*", ungrouped)
    for n in range(3):
        bus.publish("jobs.resize", {"n": n})
    assert [e.data["n"] for e in grouped.events] == [0, 1, 2]
    assert len(ungrouped.events) == 3


def test_members_of_one_group_take_turns_and_unsubscribe_by_group() -> None:
    bus = InProcessBus()
    first, second = Recorder(), Recorder()
    bus.subscribe("jobs.*", first, group="g")
    bus.subscribe("jobs.*", second, group="g")
    for _ in range(4):
        bus.publish("jobs.x")
    assert len(first.events) == len(second.events) == 2
    bus.unsubscribe("jobs.*", first, group="g")
    bus.publish("jobs.x")
    assert len(second.events) == 3 and len(first.events) == 2


def test_a_bad_group_name_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid group"):
        InProcessBus().subscribe("jobs.*", Recorder(), group="no spaces")
