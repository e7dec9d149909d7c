# modules/producer.py: a job; each run publishes one batch and exits
import sys
import time
from typing import Any

from module_sdk import EventBus


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    for n in range(int(config["batch"])):
        event_bus.publish("jobs.new", {"n": n, "at": time.time()})
    sys.exit(0)  # done: the shim shuts the module down and its events go out


def shutdown() -> None:
    pass
