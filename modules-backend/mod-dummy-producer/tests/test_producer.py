"""Tests of the demo producer on an in-process bus (fixtures from module_sdk.pytest_plugin)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType

import pytest

from module_sdk import Event
from module_sdk.testing import InProcessBus, ModuleLoader

MODULE_DIR = Path(__file__).resolve().parent.parent
TIMEOUT = 5.0


@pytest.fixture
def producer(module_loader: ModuleLoader) -> ModuleType:
    return module_loader(MODULE_DIR)


def wait_for_events(bus: InProcessBus, pattern: str, count: int) -> list[Event]:
    """Block until `count` events matching `pattern` were published, or fail after TIMEOUT."""
    done = threading.Event()

    def on_event(_: Event) -> None:
        if len(bus.events(pattern)) >= count:
            done.set()

    bus.subscribe(pattern, on_event)
    try:
        if len(bus.events(pattern)) < count:
            assert done.wait(TIMEOUT), f"fewer than {count} {pattern} events within {TIMEOUT}s"
    finally:
        bus.unsubscribe(pattern, on_event)
    return bus.events(pattern)


def test_publishes_a_ping_at_once(producer: ModuleType, event_bus: InProcessBus) -> None:
    producer.initialize(event_bus, {"publish_interval": 60})

    (ping,) = wait_for_events(event_bus, "test.ping", 1)
    assert ping.data == {"message": "hello"}
    assert ping.source == "test"
    producer.shutdown()
    assert [e.type for e in event_bus.published] == ["test.ping"]


def test_uses_configured_event_type_and_message(
    producer: ModuleType, event_bus: InProcessBus
) -> None:
    producer.initialize(
        event_bus, {"publish_interval": 60, "event_type": "demo.greeting", "message": "hi there"}
    )

    (event,) = wait_for_events(event_bus, "demo.greeting", 1)
    assert event.data == {"message": "hi there"}
    producer.shutdown()
    assert event_bus.events("test.*") == []


def test_keeps_publishing_at_the_interval(producer: ModuleType, event_bus: InProcessBus) -> None:
    producer.initialize(event_bus, {"publish_interval": 0.01})

    events = wait_for_events(event_bus, "test.ping", 3)
    assert all(e.data == {"message": "hello"} for e in events)


def test_shutdown_stops_the_publishing_thread(
    producer: ModuleType, event_bus: InProcessBus
) -> None:
    before = set(threading.enumerate())
    producer.initialize(event_bus, {"publish_interval": 0.01})
    started = [t for t in threading.enumerate() if t not in before]
    assert started, "initialize() started no thread"
    wait_for_events(event_bus, "test.ping", 2)

    producer.shutdown()

    assert not any(t.is_alive() for t in started)
