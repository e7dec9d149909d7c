# modules/consumer.py: collects the results
import logging
from typing import Any

from module_sdk import Event, EventBus

log = logging.getLogger("consumer")


def collect(event: Event) -> None:
    log.info("job %s = %s (by %s)", event.data["n"], event.data["square"], event.source)


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    event_bus.subscribe("jobs.done", collect)


def shutdown() -> None:
    pass
