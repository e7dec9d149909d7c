"""The supervisor's own publisher: built-in events with source `orchestrator` on the bus.

It PUSHes them to the broker process, which publishes them: a PUB socket here would receive, and
keep, every subscription any peer makes, so a peer could grow the supervisor's memory.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgpack
import zmq

from module_sdk.envelopes import Envelopes
from module_sdk.event import validate_event_type

log = logging.getLogger(__name__)
SOURCE = "orchestrator"
SYNC_INTERVAL = 1.0  # seconds between syncs, as a module's heartbeat ticks
CUT_ABOVE = 1024  # bytes: a field of a built-in event over the bus's limit is cut above this


class SystemEvents:
    """Publishes `app.*`, `module.*` and `resources.usage`; used only from the supervisor's loop."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        inject_endpoint: str,
        *,
        max_message_size: int = -1,
    ) -> None:
        self._pub = context.socket(zmq.PUSH)
        self._pub.setsockopt(zmq.LINGER, 500)
        self._pub.setsockopt(zmq.SNDHWM, 10_000)  # while the broker restarts
        self._pub.setsockopt(zmq.RECONNECT_IVL, 10)
        self._pub.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        self._pub.connect(inject_endpoint)
        self.lost = 0
        # Random, as a module's: two hosts' supervisors may share a pid (1, in containers), and a
        # cluster bridge takes a prefix it imported from another host for that host's.
        self.prefix = f"{os.getpid():x}-{os.urandom(3).hex()}-sup-"
        self._envelopes = Envelopes(SOURCE, self.prefix, max_message_size)
        self._next_sync = 0.0
        self._cut: set[str] = set()  # built-in event types sent cut once: said once

    def publish(self, event_type: str, **data: Any) -> None:
        """Publish one built-in event; failures are logged, never raised into the loop. One
        over the bus's max message size (a module's large `config` in `module.loaded`, say)
        goes out with its large fields cut, each replaced by a note of its size."""
        try:
            self.send(event_type, data, SOURCE)
            return
        except TypeError as exc:
            self._unsent(event_type, str(exc))
            return
        except ValueError as exc:
            too_large = str(exc)
        slim, cut = _slim(data)
        try:
            self.send(event_type, slim, SOURCE)
        except (TypeError, ValueError) as exc:
            self._unsent(event_type, str(exc))
            return
        if event_type not in self._cut:
            self._cut.add(event_type)
            log.warning("%s; sent with %s cut (said once per event type)", too_large, cut)

    def _unsent(self, event_type: str, why: str) -> None:
        self.lost += 1
        if self.lost == 1 or self.lost % 1000 == 0:
            log.warning("could not publish %s (%d lost so far): %s", event_type, self.lost, why)

    def send(self, event_type: str, data: Any, source: str) -> str:
        """Publish one event on behalf of `source`; returns its id. Raises ValueError for an
        invalid type or an event over the bus's max message size, TypeError for data msgpack
        cannot carry; logs a failure to send."""
        validate_event_type(event_type)
        topic = event_type.encode()
        body = self._envelopes.pack(event_type, topic, data, source)
        event_id = self._envelopes.last_id
        try:
            self._pub.send_multipart([topic, body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                log.warning("could not publish %s (%d lost so far): %s", event_type, self.lost, exc)
        return event_id

    def sync(self, now: float) -> None:
        """At most once per SYNC_INTERVAL (`now` is monotonic): tell the subscribers of each topic
        published on lately its last sequence number, as modules do on each heartbeat, so that
        events lost at the end of a burst are counted without waiting for the next one."""
        if now < self._next_sync:
            return
        self._next_sync = now + SYNC_INTERVAL
        for topic, body in self._envelopes.syncs():
            try:
                self._pub.send_multipart([topic, body], zmq.NOBLOCK)
            except zmq.ZMQError:
                return  # the broker is away: the next tick tries again

    def close(self) -> None:
        self._pub.close()


def _slim(data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`data` with each field over CUT_ABOVE bytes packed replaced by a note of its size, and
    the names of those fields."""
    slim: dict[str, Any] = {}
    cut: list[str] = []
    for key, value in data.items():
        size = len(msgpack.packb(value))
        if size > CUT_ABOVE:
            slim[key] = f"<cut: {size} bytes, over bus.max_message_size_mb>"
            cut.append(key)
        else:
            slim[key] = value
    return slim, ", ".join(cut) or "nothing"
