# modules/worker.py: each of the four instances gets a share of the jobs
import os
from typing import Any

from module_sdk import Event, EventBus

bus: EventBus | None = None


def handle(event: Event) -> None:
    assert bus is not None
    n = event.data["n"]
    me = os.environ["ORCHESTRATOR_MODULE"]  # worker#1 .. worker#4
    bus.publish("jobs.done", {"n": n, "square": n * n, "worker": me})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global bus
    bus = event_bus
    event_bus.subscribe("jobs.new", handle, group="workers")  # one worker per job


def shutdown() -> None:
    pass
