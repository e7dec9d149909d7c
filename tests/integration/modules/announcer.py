"""Probe module: publishes `probe.hello` with its pid from inside initialize()."""

import os
from typing import Any

from module_sdk import EventBus


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    event_bus.publish("probe.hello", {"pid": os.getpid()})


def shutdown() -> None:
    pass
