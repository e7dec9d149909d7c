"""The child's side of the child channel: a DEALER socket to the supervisor's ROUTER."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import msgpack
import zmq


class SupervisorChannel:
    """Sends hello / ready / error / heartbeat to the supervisor and receives its replies."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, name: str) -> None:
        self.pid = os.getpid()
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 500)
        self.socket.setsockopt(zmq.ROUTING_ID, f"{name}:{self.pid}".encode())
        self.socket.connect(endpoint)

    def send(self, kind: str, **fields: Any) -> None:
        """Send one message; never blocks (a message to a supervisor that is gone is dropped)."""
        payload = msgpack.packb({"kind": kind, "pid": self.pid, **fields})
        with contextlib.suppress(zmq.Again):
            self.socket.send(payload, zmq.NOBLOCK)

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message from the supervisor, or None after `timeout` seconds."""
        if not self.socket.poll(int(timeout * 1000), zmq.POLLIN):
            return None
        message = msgpack.unpackb(self.socket.recv(), raw=False)
        if not isinstance(message, dict):
            raise ValueError("malformed message from the supervisor")
        return message

    def close(self) -> None:
        """Close the socket, giving queued messages a short time to go out."""
        self.socket.close()
