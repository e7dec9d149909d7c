"""Demo consumer: logs `Received <type>: <message>` for every event it subscribes to."""

from __future__ import annotations

import logging
from typing import Any

from module_sdk import Event, EventBus

log = logging.getLogger(__name__)

_bus: EventBus | None = None
_patterns: list[str] = []


def on_event(event: Event) -> None:
    """Log the event's message."""
    message = event.data.get("message") if isinstance(event.data, dict) else event.data
    log.info("Received %s: %s", event.type, message)


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    """Subscribe to `subscribe_events` (default `test.ping`)."""
    global _bus, _patterns
    _bus = event_bus
    _patterns = [str(p) for p in config.get("subscribe_events", ["test.ping"])]
    for pattern in _patterns:
        event_bus.subscribe(pattern, on_event)
    log.info("listening for %s", ", ".join(_patterns))


def shutdown() -> None:
    """Drop the subscriptions."""
    if _bus is not None:
        for pattern in _patterns:
            _bus.unsubscribe(pattern, on_event)
    log.info("consumer stopped")


def get_tests() -> list[str]:
    """Test paths relative to this module, for `orchestrator test`."""
    return ["tests"]
