"""Bench ponger: answers every `rt.ping` with an `rt.pong` carrying the same data.
Answers `ctl.hello` with `rep.hello`."""

from __future__ import annotations

from typing import Any

from module_sdk import Event, EventBus

_bus: EventBus | None = None
_name = "ponger"


def on_ping(event: Event) -> None:
    assert _bus is not None
    _bus.publish("rt.pong", event.data)


def on_hello(event: Event) -> None:
    assert _bus is not None
    _bus.publish("rep.hello", {"name": _name})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus, _name
    _bus, _name = event_bus, str(config.get("name", "ponger"))
    event_bus.subscribe("rt.ping", on_ping)
    event_bus.subscribe("ctl.hello", on_hello)


def shutdown() -> None:
    """Nothing to release."""
