"""Demo producer: publishes `test.ping` with `{"message": "hello"}` every `publish_interval` seconds."""

from __future__ import annotations

import logging
import threading
from typing import Any

from module_sdk import EventBus

log = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    """Start publishing; the first event goes out at once."""
    global _thread
    interval = float(config.get("publish_interval", 5))
    event_type = str(config.get("event_type", "test.ping"))
    message = str(config.get("message", "hello"))
    _stop.clear()

    def run() -> None:
        while True:
            event_bus.publish(event_type, {"message": message})
            log.debug("published %s", event_type)
            if _stop.wait(interval):
                return

    _thread = threading.Thread(target=run, name="producer", daemon=True)
    _thread.start()
    log.info("publishing %s every %gs", event_type, interval)


def shutdown() -> None:
    """Stop the publishing thread."""
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=2)
    log.info("producer stopped")


def get_tests() -> list[str]:
    """Test paths relative to this module, for `orchestrator test`."""
    return ["tests"]
