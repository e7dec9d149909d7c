"""A subscriber in the bench process on a running supervisor's bus, as `orchestrator events` is.

Each event is stamped with `time.perf_counter()` on the SDK's receiver thread the moment its
callback runs, so a wait measures arrival, not when the main thread got round to looking.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from bench.project import BenchError
from module_sdk import Event
from module_sdk.bus import ZmqEventBus

HANDSHAKE_TIMEOUT = 5.0


class BusProbe:
    """Subscribes `patterns` on the bus at `xsub`/`xpub`; `wait()` returns matching events."""

    def __init__(self, xsub: str, xpub: str, patterns: Iterable[str]) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._events: queue.Queue[tuple[Event, float]] = queue.Queue()
        self.bus = ZmqEventBus(self._context, "bench", xsub, xpub)
        try:
            for pattern in patterns:
                self.bus.subscribe(pattern, self._arrived)
            self.bus.handshake(HANDSHAKE_TIMEOUT)  # our subscriptions are at the broker now
            self.bus.start()
        except BaseException:
            self.close()
            raise

    def _arrived(self, event: Event) -> None:
        self._events.put((event, time.perf_counter()))

    def publish(self, event_type: str, data: Any = None) -> None:
        self.bus.publish(event_type, data)

    def wait(
        self, match: Callable[[Event], bool], timeout: float, what: str
    ) -> tuple[Event, float]:
        """The next event that `match`es and its arrival time; others are dropped. Raises
        BenchError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
            try:
                event, arrived = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if match(event):
                return event, arrived

    def next_event(self, timeout: float) -> tuple[str, Any] | None:
        """The next event as `(type, data)`, or None after `timeout` seconds."""
        try:
            event, _ = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        return event.type, event.data

    def close(self) -> None:
        self.bus.close(timeout=1.0)
        self._context.destroy(linger=0)
