"""Probe module: initialize() raises."""

from typing import Any


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    raise RuntimeError("boom: the probe failed on purpose")


def shutdown() -> None:
    pass
