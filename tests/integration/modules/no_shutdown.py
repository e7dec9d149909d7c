"""Probe module: lacks shutdown()."""

from typing import Any


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    pass
