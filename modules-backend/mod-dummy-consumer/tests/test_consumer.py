"""Tests of the demo consumer on an in-process bus (fixtures from module_sdk.pytest_plugin)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import pytest

from module_sdk.testing import InProcessBus, ModuleLoader

MODULE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
def consumer(module_loader: ModuleLoader, caplog: pytest.LogCaptureFixture) -> ModuleType:
    module = module_loader(MODULE_DIR)
    caplog.set_level(logging.INFO, logger=module.__name__)
    return module


def received(caplog: pytest.LogCaptureFixture, module: ModuleType) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == module.__name__ and r.getMessage().startswith("Received ")
    ]


def test_logs_a_ping(
    consumer: ModuleType, event_bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    consumer.initialize(event_bus, {})

    event_bus.publish("test.ping", {"message": "hello"})

    assert received(caplog, consumer) == ["Received test.ping: hello"]


def test_logs_data_that_is_not_a_dict_as_is(
    consumer: ModuleType, event_bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    consumer.initialize(event_bus, {})

    event_bus.publish("test.ping", "plain")

    assert received(caplog, consumer) == ["Received test.ping: plain"]


def test_subscribes_to_configured_events(
    consumer: ModuleType, event_bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    consumer.initialize(event_bus, {"subscribe_events": ["demo.*", "other.one"]})

    event_bus.publish("test.ping", {"message": "hello"})
    event_bus.publish("demo.a", {"message": "first"})
    event_bus.publish("demo.b.c", {"message": "second"})
    event_bus.publish("other.two", {"message": "ignored"})
    event_bus.publish("other.one", {"message": "third"})

    assert received(caplog, consumer) == [
        "Received demo.a: first",
        "Received demo.b.c: second",
        "Received other.one: third",
    ]


def test_shutdown_unsubscribes(
    consumer: ModuleType, event_bus: InProcessBus, caplog: pytest.LogCaptureFixture
) -> None:
    consumer.initialize(event_bus, {"subscribe_events": ["test.ping", "demo.*"]})
    event_bus.publish("test.ping", {"message": "before"})

    consumer.shutdown()
    event_bus.publish("test.ping", {"message": "after"})
    event_bus.publish("demo.x", {"message": "after"})

    assert received(caplog, consumer) == ["Received test.ping: before"]
