"""The child's side of the child channel: a DEALER socket to the supervisor's ROUTER."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import msgpack
import zmq

from module_sdk import protocol

_ERROR_KEPT = 4000  # characters of an error report's message
_TRACEBACK_KEPT = 64 * 1024  # characters of its traceback, from the end


class SupervisorChannel:
    """Sends hello / ready / heartbeat / unhealthy / error to the supervisor and receives its replies."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, name: str, routing_id: str
    ) -> None:
        """`routing_id`: what the supervisor gave this process (`ENV_CHANNEL_ID`); it answers
        nothing else for it."""
        self.pid = os.getpid()
        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 500)
        self.socket.setsockopt(zmq.ROUTING_ID, routing_id.encode())
        self.socket.connect(endpoint)

    def hello(self, name: str) -> None:
        """Ask for the spec of module `name`."""
        self.send(protocol.Hello(kind=protocol.HELLO, pid=self.pid, name=name))

    def ready(self, *, contained: bool, run: bool = False) -> None:
        """`initialize()` returned and the bus is connected; `run`: the module defines run()."""
        message = protocol.Ready(kind=protocol.READY, pid=self.pid, contained=contained)
        if run:
            message["run"] = True
        self.send(message)

    def heartbeat(self, counters: dict[str, int], busy_for: float, **extra: Any) -> None:
        """Alive, with the bus's counters, how long the running callback has taken, and the
        module's own metrics when they changed (`extra`: `metrics`)."""
        message = protocol.Heartbeat(
            kind=protocol.HEARTBEAT, pid=self.pid, counters=counters, busy_for=busy_for
        )
        if "metrics" in extra:
            message["metrics"] = extra["metrics"]
        self.send(message)

    def unhealthy(self, error: str, failures: int) -> None:
        """`health()` failed `failures` times in a row (at least `health_retries`)."""
        message = protocol.Unhealthy(
            kind=protocol.UNHEALTHY, pid=self.pid, error=error, failures=failures
        )
        self.send(message)

    def error(self, stage: str, error: str, traceback: str) -> None:
        """What went wrong, before a failing exit: the start of the message and the end of the
        traceback (the supervisor refuses a message of more than 1 MiB of text, and shows one
        line of the error; the whole traceback is in the module's log)."""
        message = protocol.Error(
            kind=protocol.ERROR,
            pid=self.pid,
            stage=stage,
            error=error[:_ERROR_KEPT],
            traceback=traceback[-_TRACEBACK_KEPT:],
        )
        self.send(message)

    def send(self, message: protocol.ChildMessage) -> None:
        """Send one message; never blocks (a message to a supervisor that is gone is dropped)."""
        with contextlib.suppress(zmq.Again):
            self.socket.send(msgpack.packb(message), zmq.NOBLOCK)

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
