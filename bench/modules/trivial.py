"""Bench module that does nothing: what a module costs to start, run and stop by itself."""

from __future__ import annotations

from typing import Any


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    """Nothing to set up."""


def shutdown() -> None:
    """Nothing to release."""
