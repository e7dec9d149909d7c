"""Bench subscriber: counts the events of its `topics`, stamping the first and the last with
`time.perf_counter()`. `ctl.run` starts a new count; `ctl.report` (which the bench sends once the
publisher is done, so it arrives after the run's last event) answers the count with `rep.recv`.
Answers `ctl.hello` with `rep.hello`."""

from __future__ import annotations

import time
from typing import Any

from module_sdk import Event, EventBus

_bus: EventBus | None = None
_name = "sub"
_run = ""
_count = 0
_first = 0.0
_last = 0.0


def on_data(event: Event) -> None:
    global _count, _first, _last
    now = time.perf_counter()
    if not _count:
        _first = now
    _last = now
    _count += 1


def on_run(event: Event) -> None:
    global _run, _count
    _run, _count = str(event.data["run"]), 0


def on_report(event: Event) -> None:
    assert _bus is not None
    report = {"name": _name, "run": _run, "received": _count, "first": _first, "last": _last}
    _bus.publish("rep.recv", report)


def on_hello(event: Event) -> None:
    assert _bus is not None
    _bus.publish("rep.hello", {"name": _name})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus, _name
    _bus, _name = event_bus, str(config.get("name", "sub"))
    for topic in config.get("topics", []):
        event_bus.subscribe(str(topic), on_data)
    event_bus.subscribe("ctl.run", on_run)
    event_bus.subscribe("ctl.report", on_report)
    event_bus.subscribe("ctl.hello", on_hello)


def shutdown() -> None:
    """Nothing to release."""
