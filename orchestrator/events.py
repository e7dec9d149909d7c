"""The supervisor's own publisher: built-in events with source `orchestrator` on the bus."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import zmq

from module_sdk.codec import encode_envelope
from module_sdk.event import validate_event_type

log = logging.getLogger(__name__)
SOURCE = "orchestrator"


class SystemEvents:
    """Publishes `app.*`, `module.*` and `resources.usage`; used only from the supervisor's loop."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], xsub_endpoint: str) -> None:
        self._pub = context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 500)
        self._pub.connect(xsub_endpoint)
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-sup-"

    def publish(self, event_type: str, **data: Any) -> None:
        """Publish one event; failures are logged, never raised into the supervisor's loop."""
        validate_event_type(event_type)
        body = encode_envelope(SOURCE, f"{self._prefix}{next(self._ids):x}", time.time(), data)
        try:
            self._pub.send_multipart([event_type.encode(), body], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not publish %s: %s", event_type, exc)

    def close(self) -> None:
        self._pub.close()
