"""Probe module: does nothing, and prints a line at start (for output capture)."""

from typing import Any


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    print("idle module says hi", flush=True)


def shutdown() -> None:
    print("idle module says bye", flush=True)
