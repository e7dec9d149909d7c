"""Probe module: appends every event matching config `patterns` to the JSON-lines file `record`."""

import json
import threading
from typing import Any

from module_sdk import Event, EventBus

_lock = threading.Lock()
_path = ""


def _record(event: Event) -> None:
    line = {"type": event.type, "data": event.data, "source": event.source, "id": event.id}
    with _lock, open(_path, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(line, default=repr) + "\n")


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _path
    _path = config["record"]
    for pattern in config.get("patterns", ["*"]):
        event_bus.subscribe(pattern, _record)


def shutdown() -> None:
    pass
