"""Probe module: defines its own metrics (module_sdk.metrics) and counts the pings it gets."""

from typing import Any

from module_sdk import Event, EventBus, metrics

pings = metrics.counter("probe_pings_total", "Pings received.", labels=("kind",))
depth = metrics.gauge("probe_depth", "A gauge set at start.")
took = metrics.histogram("probe_seconds", "Observed at start.", buckets=(0.5, 1.0))


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    depth.set(42)
    took.observe(0.7)
    event_bus.subscribe("probe.ping", on_ping)


def on_ping(event: Event) -> None:
    pings.inc(kind=str(event.data))


def shutdown() -> None:
    pass
