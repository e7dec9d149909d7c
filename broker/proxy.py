"""The XSUB/XPUB forwarder. Publishers connect to XSUB, subscribers to XPUB; libzmq's steerable
proxy moves frames between them without Python on the hot path, and subscriptions the other way.

Every frame is bounded before libzmq's routing sees it: a frame on XSUB by the bus's maximum
message size, a subscription on XPUB by `max_subscription_size` (libzmq keeps subscriptions in a
trie it walks recursively: a 200 KB prefix overflows the stack), and a peer that never completes
its handshake is dropped after `handshake_ms`. A peer that breaks a bound is disconnected. The
number of frames in a message is not bounded: libzmq buffers the frames of a message until its
last one, without limit, so a peer that never finishes one grows the broker until the
supervisor restarts it past `bus.broker_memory_limit_mb`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import zmq

from broker.groups import GroupDispatcher, StatsCallback

log = logging.getLogger(__name__)

# A subscription message is one byte (subscribe/unsubscribe) and the prefix: the SDK caps
# patterns at 255 characters, and its internal probes are shorter.
MAX_SUBSCRIPTION_SIZE = 512
_HANDSHAKE_MS = 10_000


class BrokerError(RuntimeError):
    """The broker could not bind its endpoints."""


class Broker:
    """Runs the proxy on its own thread, whose sockets are created and closed on that thread.

    `start()` returns once both endpoints are bound (or raises BrokerError); `stop()` asks the proxy
    to terminate and `join()` waits for the thread. With `curve`, both endpoints are CURVE servers
    that admit only the one client key given. With `inject_endpoint`, a PULL socket is bound
    there whose messages are published on the bus: a sender that holds no subscriptions (the
    supervisor) can publish without libzmq keeping every subscriber's prefixes in its process.
    With `groups_endpoint`, a ROUTER socket is bound there for grouped delivery (see
    `broker.groups`); `on_group_stats` gets its counters when they change; `kept_groups` are
    redelivering groups to queue for from the start (see `GroupDispatcher`).
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        xsub_endpoint: str,
        xpub_endpoint: str,
        *,
        max_message_size: int = -1,
        high_water_mark: int = 100_000,
        inject_endpoint: str | None = None,
        max_subscription_size: int = MAX_SUBSCRIPTION_SIZE,
        curve: tuple[bytes, bytes] | None = None,
        groups_endpoint: str | None = None,
        on_group_stats: StatsCallback | None = None,
        kept_groups: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.xsub_endpoint = xsub_endpoint
        self.xpub_endpoint = xpub_endpoint
        self.inject_endpoint = inject_endpoint
        self._context = context
        self._max_message_size = max_message_size
        self._max_subscription_size = max_subscription_size
        self._hwm = high_water_mark
        self._control_endpoint = f"inproc://broker-control-{id(self)}"
        self._internal_xsub = f"inproc://broker-xsub-{id(self)}"
        self._bound = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="broker", daemon=True)
        self._injector: threading.Thread | None = None
        self._control: zmq.Socket[bytes] | None = None
        self._curve = curve  # (server secret key, the one client public key allowed), z85
        self._auth: Any = None
        self._internal_xpub = f"inproc://broker-xpub-{id(self)}"
        self.groups: GroupDispatcher | None = None
        if groups_endpoint is not None:
            self.groups = GroupDispatcher(
                context,
                groups_endpoint,
                self._internal_xpub,
                high_water_mark=high_water_mark,
                curve_secret=curve[0] if curve is not None else None,
                on_stats=on_group_stats,
                bind=_bind,
                kept=kept_groups,
            )

    def start(self, timeout: float = 5.0) -> None:
        """Bind both endpoints and start forwarding; raise BrokerError if binding fails."""
        self._control = self._context.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._control_endpoint)
        if self._curve is not None:  # before the endpoints accept anyone
            from broker.auth import start_authenticator  # noqa: PLC0415  (tcp only)

            self._auth = start_authenticator(self._context, self._curve[1])
        self._thread.start()
        if not self._bound.wait(timeout):
            raise BrokerError("the broker did not bind its endpoints in time")
        if self._error is not None:
            raise BrokerError(str(self._error)) from self._error
        if self.inject_endpoint is not None:
            self._start_injector(self.inject_endpoint)
        if self.groups is not None:
            try:
                self.groups.start(timeout)
            except zmq.ZMQError as exc:
                raise BrokerError(str(exc)) from exc

    def stop(self) -> None:
        """Ask the proxy to terminate; it closes its sockets on its own thread."""
        if self.groups is not None:
            self.groups.stop()
        if self._control is not None and self._thread.is_alive():
            self._control.send(b"TERMINATE")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the broker thread to finish, then close the control socket."""
        if self.groups is not None:
            self.groups.join(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._control is not None:
            self._control.close()
            self._control = None

    def _run(self) -> None:
        xsub = self._context.socket(zmq.XSUB)
        xpub = self._context.socket(zmq.XPUB)
        control = self._context.socket(zmq.PAIR)
        try:
            try:
                self._configure(xsub, xpub)
                control.connect(self._control_endpoint)
                _bind(xsub, self.xsub_endpoint)
                _bind(xpub, self.xpub_endpoint)
                if self.inject_endpoint is not None:
                    xsub.bind(self._internal_xsub)
                if self.groups is not None:  # its SUB takes the grouped topics from here
                    xpub.bind(self._internal_xpub)
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

    def _configure(self, xsub: zmq.Socket[bytes], xpub: zmq.Socket[bytes]) -> None:
        for sock in (xsub, xpub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self._hwm)
            sock.setsockopt(zmq.RCVHWM, self._hwm)
            sock.setsockopt(zmq.HANDSHAKE_IVL, _HANDSHAKE_MS)
        if self._curve is not None:
            from broker.auth import make_server  # noqa: PLC0415  (tcp only)

            for sock in (xsub, xpub):
                make_server(sock, self._curve[0])
        xsub.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        # XSUB sends only subscriptions, and a new publisher gets all of them at once: past a
        # high-water mark libzmq would drop some (a module's handshake probe among them).
        xsub.setsockopt(zmq.SNDHWM, 0)
        # What a subscriber sends are subscriptions: nothing larger reaches the trie.
        xpub.setsockopt(zmq.MAXMSGSIZE, self._max_subscription_size)

    def _start_injector(self, endpoint: str) -> None:
        pull = self._context.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.setsockopt(zmq.RCVHWM, self._hwm)
        pull.setsockopt(zmq.MAXMSGSIZE, self._max_message_size)
        try:
            _bind(pull, endpoint)
        except zmq.ZMQError as exc:
            pull.close()
            raise BrokerError(str(exc)) from exc
        pub = self._context.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.setsockopt(zmq.SNDHWM, self._hwm)
        pub.connect(self._internal_xsub)

        def forward() -> None:
            try:
                zmq.proxy(pull, pub)
            except zmq.ContextTerminated:
                pass
            finally:
                pull.close(linger=0)
                pub.close(linger=0)

        self._injector = threading.Thread(target=forward, name="broker-inject", daemon=True)
        self._injector.start()


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    """Bind, and make an ipc socket file reachable by its owner only."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise zmq.ZMQError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from exc
    if endpoint.startswith("ipc://"):
        os.chmod(endpoint[len("ipc://") :], 0o600)
