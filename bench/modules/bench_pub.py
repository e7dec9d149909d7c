"""Bench publisher: on `ctl.run` publishes `n` events of `topic` as fast as it can from a thread,
then reports with `rep.sent` (again on each `ctl.report`, in case the first was dropped).
Answers `ctl.hello` with `rep.hello`."""

from __future__ import annotations

import threading
import time
from typing import Any

from module_sdk import Event, EventBus

_bus: EventBus | None = None
_name = "pub"
_last_report: dict[str, Any] = {}


def _burst(run: str, topic: str, n: int, payload: str) -> None:
    global _last_report
    assert _bus is not None
    publish = _bus.publish
    start = time.perf_counter()
    for i in range(n):
        publish(topic, {"s": i, "p": payload})
    seconds = time.perf_counter() - start
    _last_report = {"name": _name, "run": run, "sent": n, "seconds": seconds}
    publish("rep.sent", _last_report)


def on_run(event: Event) -> None:
    """Start a burst on its own thread: callbacks must not block the receiver."""
    cmd = event.data
    threading.Thread(
        target=_burst,
        args=(str(cmd["run"]), str(cmd["topic"]), int(cmd["n"]), str(cmd["payload"])),
        name="bench-burst",
        daemon=True,
    ).start()


def on_report(event: Event) -> None:
    assert _bus is not None
    if _last_report:
        _bus.publish("rep.sent", _last_report)


def on_hello(event: Event) -> None:
    assert _bus is not None
    _bus.publish("rep.hello", {"name": _name})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus, _name
    _bus, _name = event_bus, str(config.get("name", "pub"))
    event_bus.subscribe("ctl.run", on_run)
    event_bus.subscribe("ctl.report", on_report)
    event_bus.subscribe("ctl.hello", on_hello)


def shutdown() -> None:
    """Nothing to stop: a burst thread is a daemon."""
