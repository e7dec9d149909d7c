"""How a bus's sockets reach the broker: their options, and the probe that proves the path."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager

import zmq

from module_sdk.protocol import INTERNAL_PREFIX, PROBE_PREFIX


class HandshakeTimeoutError(RuntimeError):
    """The probe did not come back through the broker in time."""


def prepare(sock: zmq.Socket[bytes], curve: Mapping[str, str] | None) -> None:
    """Options a bus socket needs before it connects: retry 10 ms after a failed connection,
    backing off to 200 ms, rather than ZeroMQ's fixed 100 ms (a module may connect before the
    broker has bound, or while it restarts); and, on a tcp bus, the CURVE keys it was given
    (`server_key`, `public_key`, `secret_key`, z85), without which the broker refuses it."""
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
    if curve:
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve["server_key"].encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve["public_key"].encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve["secret_key"].encode())


def bus_sockets(  # noqa: PLR0917  (the bus settings, as ZmqEventBus takes them)
    context: zmq.Context[zmq.Socket[bytes]],
    xsub_endpoint: str,
    xpub_endpoint: str,
    high_water_mark: int,
    max_message_size: int,
    curve: Mapping[str, str] | None,
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """The PUB socket (to the broker's XSUB) and the SUB socket (from its XPUB) of a module's
    bus, connecting (ZeroMQ connects in the background)."""
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, high_water_mark)
    # What comes in are the subscriptions the broker forwards: taken off the connection at once
    # (kept here, not at the broker) and read on each heartbeat tick if not by a publish.
    pub.setsockopt(zmq.RCVHWM, 0)
    pub.setsockopt(zmq.LINGER, 1000)  # let events published in shutdown() go out
    prepare(pub, curve)
    pub.connect(xsub_endpoint)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, high_water_mark)
    # What goes out are our subscriptions: past a high-water mark libzmq drops them silently
    # (a module subscribing faster than a slow or restarting broker reads lost some for good).
    sub.setsockopt(zmq.SNDHWM, 0)
    sub.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    sub.setsockopt(zmq.LINGER, 0)
    prepare(sub, curve)
    sub.connect(xpub_endpoint)
    return pub, sub


# Probes sent a millisecond apart before the waits double. Until our subscription to a probe has
# reached our own publisher (through the broker: 1-3 ms on a busy machine), every probe is
# dropped there; a probe each millisecond meanwhile proves the bus about 1 ms sooner, per
# handshake, than waits of 1, 2, 4 ms would.
_EAGER_PROBES = 6


def round_trip(
    pub: zmq.Socket[bytes],
    sub: zmq.Socket[bytes],
    pub_lock: AbstractContextManager[object],
    deadline: float,
    early: list[tuple[bytes, bytes]],
) -> bool:
    """Subscribe `sub` to a new probe token and send it on `pub` until it comes back (True) or
    `deadline` (a `time.monotonic()`) passes (False); events read meanwhile go to `early`."""
    token = probe_token()
    sub.setsockopt(zmq.SUBSCRIBE, token)
    wait, sends = 0.001, 0
    try:
        while True:
            with pub_lock:
                pub.send_multipart([token, b""])
            sends += 1
            if await_probe(sub, token, wait, early):
                return True
            if time.monotonic() >= deadline:
                return False
            wait = wait if sends < _EAGER_PROBES else min(wait * 2, 0.05)
    finally:
        sub.setsockopt(zmq.UNSUBSCRIBE, token)


def probe_token() -> bytes:
    """A topic of the SDK's own that nobody else subscribes to."""
    return PROBE_PREFIX + os.urandom(8).hex().encode()


def await_probe(
    sub: zmq.Socket[bytes], token: bytes, wait: float, early: list[tuple[bytes, bytes]]
) -> bool:
    """Read `sub` for up to `wait` seconds until `token` comes back; True if it did. Events read
    meanwhile are appended to `early`, for the callbacks once the receiver runs."""
    until = time.monotonic() + wait
    while (remaining := until - time.monotonic()) > 0:
        if not sub.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
            return False
        while True:
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[0] == token:
                return True
            if not frames[0].startswith(INTERNAL_PREFIX):
                early.append((frames[0], frames[1] if len(frames) == 2 else b""))
    return False
