"""Bench pinger: on `ctl.ping` sends `rt.ping`; each `rt.pong` records the round trip
(`time.perf_counter()`) and, from the callback, sends the next ping; after `k` it reports the
samples (seconds) with `rep.rtt`. Answers `ctl.hello` with `rep.hello`."""

from __future__ import annotations

import time
from typing import Any

from module_sdk import Event, EventBus

_bus: EventBus | None = None
_name = "pinger"
_run = ""
_k = 0
_payload = ""
_samples: list[float] = []
_sent_at = 0.0


def _ping() -> None:
    global _sent_at
    assert _bus is not None
    _sent_at = time.perf_counter()
    _bus.publish("rt.ping", {"s": len(_samples), "p": _payload})


def on_start(event: Event) -> None:
    global _run, _k, _payload, _samples
    _run, _k, _payload = str(event.data["run"]), int(event.data["k"]), str(event.data["payload"])
    _samples = []
    _ping()


def on_pong(event: Event) -> None:
    assert _bus is not None
    _samples.append(time.perf_counter() - _sent_at)
    if len(_samples) < _k:
        _ping()
    else:
        _bus.publish("rep.rtt", {"name": _name, "run": _run, "samples": _samples})


def on_hello(event: Event) -> None:
    assert _bus is not None
    _bus.publish("rep.hello", {"name": _name})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus, _name
    _bus, _name = event_bus, str(config.get("name", "pinger"))
    event_bus.subscribe("ctl.ping", on_start)
    event_bus.subscribe("rt.pong", on_pong)
    event_bus.subscribe("ctl.hello", on_hello)


def shutdown() -> None:
    """Nothing to release."""
