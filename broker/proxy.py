"""The XSUB/XPUB forwarder. Publishers connect to XSUB, subscribers to XPUB; libzmq's steerable
proxy moves frames between them without Python on the hot path, and subscriptions the other way.
"""

from __future__ import annotations

import logging
import os
import threading

import zmq

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not bind its endpoints."""


class Broker:
    """Runs the proxy on its own thread, whose sockets are created and closed on that thread.

    `start()` returns once both endpoints are bound (or raises BrokerError); `stop()` asks the proxy
    to terminate and `join()` waits for the thread.
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        xsub_endpoint: str,
        xpub_endpoint: str,
        *,
        max_message_size: int = -1,
        high_water_mark: int = 100_000,
    ) -> None:
        self.xsub_endpoint = xsub_endpoint
        self.xpub_endpoint = xpub_endpoint
        self._context = context
        self._max_message_size = max_message_size
        self._hwm = high_water_mark
        self._control_endpoint = f"inproc://broker-control-{id(self)}"
        self._bound = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="broker", daemon=True)
        self._control: zmq.Socket[bytes] | None = None

    def start(self, timeout: float = 5.0) -> None:
        """Bind both endpoints and start forwarding; raise BrokerError if binding fails."""
        self._control = self._context.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._control_endpoint)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise BrokerError("the broker did not bind its endpoints in time")
        if self._error is not None:
            raise BrokerError(str(self._error)) from self._error

    def stop(self) -> None:
        """Ask the proxy to terminate; it closes its sockets on its own thread."""
        if self._control is not None and self._thread.is_alive():
            self._control.send(b"TERMINATE")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the broker thread to finish, then close the control socket."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._control is not None:
            self._control.close()
            self._control = None

    def _run(self) -> None:
        xsub = self._context.socket(zmq.XSUB)
        xpub = self._context.socket(zmq.XPUB)
        control = self._context.socket(zmq.PAIR)
        try:
            for sock in (xsub, xpub):
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
                sock.setsockopt(zmq.SNDHWM, self._hwm)
                sock.setsockopt(zmq.RCVHWM, self._hwm)
            control.connect(self._control_endpoint)
            try:
                _bind(xsub, self.xsub_endpoint)
                _bind(xpub, self.xpub_endpoint)
            except zmq.ZMQError as exc:
                self._error = exc
                return
            finally:
                self._bound.set()
            log.debug("broker forwarding %s -> %s", self.xsub_endpoint, self.xpub_endpoint)
            zmq.proxy_steerable(xsub, xpub, None, control)
        except zmq.ContextTerminated:
            pass
        finally:
            for sock in (xsub, xpub, control):
                sock.close(linger=0)


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Bind, and make an ipc socket file reachable by its owner only."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from exc
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://") :], 0o600)
