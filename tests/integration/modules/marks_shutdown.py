"""Probe module: its shutdown() appends a line to `config["marker"]`, so a test can tell it ran."""

from typing import Any

_marker = ""


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    global _marker
    _marker = config["marker"]


def shutdown() -> None:
    with open(_marker, "a") as sink:
        sink.write("shutdown ran\n")
