"""A subscriber that falls behind loses events at a high-water mark, and says so: the drops show
in its counters and in `status`, never as silence."""

from __future__ import annotations

from helpers import wait_until
from project import FAST_SUPERVISION, Project

FLOOD = """
import threading
import time

stop = threading.Event()


def flood(event_bus):
    for n in range(20_000):  # far more than the high-water marks on the way can hold
        event_bus.publish("flood.data", n)
    while not stop.wait(0.05):  # later events of the topic make the gaps visible
        event_bus.publish("flood.data", -1)


def initialize(event_bus, config):
    threading.Thread(target=flood, args=(event_bus,), daemon=True).start()


def shutdown():
    stop.set()
"""

SLOW = """
import time


def initialize(event_bus, config):
    event_bus.subscribe("flood.*", lambda event: time.sleep(0.001))


def shutdown():
    pass
"""


def test_a_subscriber_that_falls_behind_shows_its_drops_in_status(project: Project) -> None:
    project.configure(
        [
            {"name": "slow", "path": project.write_module("slow.py", SLOW)},
            {
                "name": "flood",
                "path": project.write_module("flood.py", FLOOD),
                "depends_on": ["slow"],  # subscribed before the first event goes out
            },
        ],
        bus={"high_water_mark": 1000},
        supervision=FAST_SUPERVISION,
    )
    project.up()
    slow = wait_until(
        lambda: (row := project.module("slow"))["dropped"] > 0 and row,
        20,
        "drops counted at the slow subscriber",
        lambda: str(project.module("slow")),
    )
    assert slow["state"] == "running"
    assert slow["events_in"] + slow["dropped"] <= 20_000 + 1000  # drops are events, not noise
    detail = project.cli("status", "slow", check=0).stdout
    assert "events dropped on the way in (fell behind the bus)" in detail, detail
    assert project.module("flood")["dropped"] == 0  # the publisher subscribed to nothing
