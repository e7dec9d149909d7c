"""The module_process fixture runs a module for real: the demo modules, end to end."""

from __future__ import annotations

from collections.abc import Callable

from project import REPO

from module_sdk.harness import RunningModule

Start = Callable[..., RunningModule]


def test_the_consumer_logs_a_ping_published_to_it(module_process: Start) -> None:
    consumer = module_process(REPO / "modules-backend" / "mod-dummy-consumer")
    assert consumer.status()["state"] == "running"
    consumer.publish("test.ping", {"message": "from a test"})
    log = consumer.wait_for_log("Received test.ping: from a test")
    assert "listening for test.ping" in log


def test_the_producer_is_heard_on_the_bus(module_process: Start) -> None:
    producer = module_process(
        REPO / "modules-backend" / "mod-dummy-producer",
        {"publish_interval": 0.05, "message": "tick"},
    )
    event = producer.wait_for("test.ping", lambda e: e.data == {"message": "tick"})
    assert event.source == "mod-dummy-producer"
    producer.stop()
    assert producer.events("test.*")
