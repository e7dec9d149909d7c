"""Bench module that floods its output: on `ctl.print` prints `n` numbered lines as fast as it can
(one `print` each, line-buffered, as a chatty module does), then `printer done RUN`; on `ctl.flood`
prints until `ctl.stop` (or `seconds` pass), then `printer flood done`."""

from __future__ import annotations

import threading
import time
from typing import Any

from module_sdk import Event, EventBus

_stop = threading.Event()
_LINE = "printer line {} of a module that prints a lot, padded to look like a log line"


def _print(run: str, n: int) -> None:
    for i in range(n):
        print(_LINE.format(i))
    print(f"printer done {run}", flush=True)


def _flood(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    i = 0
    while not _stop.is_set() and time.monotonic() < deadline:
        for _ in range(1000):
            print(_LINE.format(i))
            i += 1
    print(f"printer flood done {i}", flush=True)


def on_print(event: Event) -> None:
    """Print on a thread of its own: callbacks must not block the receiver."""
    args = (str(event.data["run"]), int(event.data["n"]))
    threading.Thread(target=_print, args=args, name="bench-print", daemon=True).start()


def on_flood(event: Event) -> None:
    _stop.clear()
    seconds = float(event.data["seconds"])
    threading.Thread(target=_flood, args=(seconds,), name="bench-flood", daemon=True).start()


def on_stop(event: Event) -> None:
    _stop.set()


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    event_bus.subscribe("ctl.print", on_print)
    event_bus.subscribe("ctl.flood", on_flood)
    event_bus.subscribe("ctl.stop", on_stop)


def shutdown() -> None:
    _stop.set()
