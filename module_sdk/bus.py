"""The ZeroMQ event bus of a child process: a PUB socket to the broker, a SUB socket from it.

Threads: `publish()` may be called from any thread (one lock guards the PUB socket). Callbacks run on
one receiver thread that owns the SUB socket once `start()` has run; before that, the thread that
calls `initialize()` owns it, so subscriptions made in `initialize()` apply at once. Subscription
changes from other threads reach the receiver through an inproc command socket, in order. With
`concurrency` > 1 the receiver hands each event to a pool of that many callback threads instead
(`module_sdk.dispatch`: in order per event type).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import zmq
import zmq.backend

from module_sdk.codec import (
    BadFrameError,
    decode_envelope,
    decode_sync_first,
)
from module_sdk.dispatch import CallbackPool
from module_sdk.envelopes import Envelopes
from module_sdk.event import Event, EventCallback, Pattern, shown, validate_event_type
from module_sdk.protocol import INTERNAL_PREFIX, PROBE_PREFIX, SYNC_SUFFIX
from module_sdk.sequence import GapCounter

log = logging.getLogger(__name__)
_monotonic = time.monotonic
# pyzmq's Socket.send is a Python layer (for the draft API's routing_id and group) over its
# backend's send; calling the backend's directly is the same send at a third of the cost.
_send_frame = zmq.backend.Socket.send
# An Event straight from its fields, without the Python-level __new__ a NamedTuple has.
_new_event = tuple.__new__

_STOP = b"stop"
_SUBSCRIBE = b"S"
_UNSUBSCRIBE = b"U"
_DRAIN_BATCH = 1024
_TOPIC_CACHE_SIZE = 4096


def _prepare(sock: zmq.Socket[bytes], curve: Mapping[str, str] | None) -> None:
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


class HandshakeTimeoutError(RuntimeError):
    """The probe did not come back through the broker in time."""


class ZmqEventBus:
    """The `EventBus` of a module running in a child process (see `module_sdk.api.EventBus`)."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        source: str,
        xsub_endpoint: str,
        xpub_endpoint: str,
        *,
        high_water_mark: int = 100_000,
        max_message_size: int = -1,
        curve: Mapping[str, str] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._source = source
        self._pub = context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, high_water_mark)
        self._pub.setsockopt(zmq.LINGER, 1000)  # let events published in shutdown() go out
        _prepare(self._pub, curve)
        self._pub.connect(xsub_endpoint)
        self._sub = context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, high_water_mark)
        self._sub.setsockopt(zmq.MAXMSGSIZE, max_message_size)
        self._sub.setsockopt(zmq.LINGER, 0)
        _prepare(self._sub, curve)
        self._sub.connect(xpub_endpoint)
        command_endpoint = f"inproc://module-sdk-bus-{id(self)}"
        self._command_in = context.socket(zmq.PAIR)
        self._command_in.bind(command_endpoint)
        self._command_out = context.socket(zmq.PAIR)
        self._command_out.connect(command_endpoint)

        # Ids, sequence numbers, packing and size checks; `pack` runs under _pub_lock.
        self._envelopes = Envelopes(
            source, f"{os.getpid():x}-{os.urandom(3).hex()}-", max_message_size
        )
        self._pack = self._envelopes.pack  # bound once: it runs for every event
        self._max_body = self._envelopes.max_body
        self._pub_lock = threading.Lock()
        self._subs_lock = threading.RLock()
        self._subscriptions: dict[str, tuple[Pattern, list[EventCallback]]] = {}
        self._zmq_refcount: dict[bytes, int] = {}
        self._route_cache: dict[bytes, tuple[str, tuple[EventCallback, ...]]] = {}
        self._topics: dict[str, bytes] = {}
        self._gaps = GapCounter()
        self._count_seq = self._gaps.event  # bound once: it runs for every numbered event
        self._early: list[tuple[bytes, bytes]] = []
        self._receiver: threading.Thread | None = None
        self._closed = False

        self.events_in = 0
        self.events_out = 0
        self.callback_errors = 0
        self.bad_frames = 0
        self._busy_since: float | None = None
        self._errors_lock = threading.Lock()  # callbacks may raise on several threads at once
        # concurrency > 1: callbacks run on a pool, in order per event type (module_sdk.dispatch)
        self._pool = CallbackPool(concurrency, self._run_callbacks) if concurrency > 1 else None
        self.on_ready: Callable[[], None] | None = None  # the shim's, with `ready: manual`

    @property
    def dropped(self) -> int:
        """Events that never arrived: gaps in a publisher's per-topic sequence numbers."""
        return self._gaps.dropped

    # -- the module-facing API -------------------------------------------------------------

    def subscribe(self, pattern: str, callback: EventCallback) -> None:
        """See `module_sdk.api.EventBus.subscribe`."""
        parsed = Pattern.parse(pattern)
        if not callable(callback):
            raise TypeError(f"callback for {pattern!r} is not callable")
        with self._subs_lock:
            entry = self._subscriptions.setdefault(parsed.text, (parsed, []))
            entry[1].append(callback)
            self._route_cache.clear()
            self._gaps.forget()  # what passed while we were not subscribed was no drop
            if len(entry[1]) == 1:
                self._change_zmq(_SUBSCRIBE, parsed.zmq_prefix)

    def unsubscribe(self, pattern: str, callback: EventCallback) -> None:
        """See `module_sdk.api.EventBus.unsubscribe`."""
        parsed = Pattern.parse(pattern)
        with self._subs_lock:
            entry = self._subscriptions.get(parsed.text)
            if entry is None or callback not in entry[1]:
                return
            entry[1].remove(callback)
            self._route_cache.clear()
            if not entry[1]:
                del self._subscriptions[parsed.text]
                self._change_zmq(_UNSUBSCRIBE, parsed.zmq_prefix)

    def clear(self) -> None:
        """See `module_sdk.api.EventBus.clear`."""
        with self._subs_lock:
            for parsed, _ in self._subscriptions.values():
                self._change_zmq(_UNSUBSCRIBE, parsed.zmq_prefix)
            self._subscriptions.clear()
            self._route_cache.clear()

    def publish(self, event_type: str, data: Any = None) -> None:
        """See `module_sdk.api.EventBus.publish`."""
        topic = self._topics.get(event_type)
        if topic is None:
            topic = validate_event_type(event_type).encode()
            if len(topic) > self._max_body:
                raise ValueError(f"event type {event_type!r} is over the bus's max_message_size")
            if len(self._topics) < _TOPIC_CACHE_SIZE:
                self._topics[event_type] = topic
        with self._pub_lock:  # packed inside: `seq` must follow the order of the sends
            if self._closed:
                raise RuntimeError("the event bus is closed (the module is shutting down)")
            body = self._pack(event_type, topic, data)
            _send_frame(self._pub, topic, zmq.SNDMORE)
            _send_frame(self._pub, body)
            self.events_out += 1

    def ready(self) -> None:
        """See `module_sdk.api.EventBus.ready`."""
        hook = self.on_ready
        if hook is not None:
            hook()

    # -- lifecycle, driven by the shim ---------------------------------------------------------

    def handshake(self, timeout: float) -> None:
        """Send a probe through the broker until it comes back on our own SUB socket.

        When it does, every subscription the broker knew before (those of modules already running)
        has reached our PUB socket, and every subscription we made before has reached the broker, since
        each direction is one ordered pipe. Events that arrive meanwhile are kept for the callbacks.
        """
        token = PROBE_PREFIX + os.urandom(8).hex().encode()
        deadline = time.monotonic() + timeout
        wait = 0.001
        with self._subs_lock:
            self._sub.setsockopt(zmq.SUBSCRIBE, token)
            try:
                while True:
                    with self._pub_lock:
                        self._pub.send_multipart([token, b""])
                    if self._await_probe(token, wait):
                        return
                    if time.monotonic() >= deadline:
                        raise HandshakeTimeoutError(f"no reply from the broker within {timeout:g}s")
                    wait = min(wait * 2, 0.05)
            finally:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, token)

    def sync(self) -> None:
        """Tell the subscribers of each topic we published on lately the last seq we sent there,
        so that they can count events lost at the end of a burst without waiting for the next
        one (see `SyncSchedule`). The shim calls this on each heartbeat tick."""
        frames = self._envelopes.syncs()
        if not frames:
            return
        with self._pub_lock:  # the events counted by these seqs have all been sent
            if self._closed:
                return
            for topic, body in frames:
                _send_frame(self._pub, topic, zmq.SNDMORE)
                _send_frame(self._pub, body)

    def start(self) -> None:
        """Start the receiver thread: from now on callbacks run, on that thread, which owns the
        SUB socket; other threads change subscriptions through the command socket."""
        with self._subs_lock:
            if self._pool is not None:
                self._pool.start()
            self._receiver = threading.Thread(
                target=self._receive, name="module-sdk-bus", daemon=True
            )
            self._receiver.start()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the receiver and close the sockets. Returns False if a callback kept the receiver
        busy past `timeout` (its sockets are then left to process exit)."""
        with self._subs_lock:
            if self._receiver is not None and self._receiver.is_alive():
                self._command_out.send(_STOP)
        deadline = time.monotonic() + timeout
        # The pool first: a receiver waiting for room in it is let go at once.
        if self._pool is not None and not self._pool.stop(timeout):
            return False
        if self._receiver is not None:
            self._receiver.join(max(0.0, deadline - time.monotonic()))
            if self._receiver.is_alive():
                return False
        with self._pub_lock:
            self._closed = True
            self._pub.close()
        with self._subs_lock:
            for sock in (self._sub, self._command_in, self._command_out):
                sock.close(linger=0)
        return True

    def counters(self) -> dict[str, int]:
        """Events in and out, callback errors and dropped bad frames, since the start."""
        return {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "callback_errors": self.callback_errors,
            "bad_frames": self.bad_frames,
            "dropped": self.dropped,
        }

    def busy_for(self) -> float:
        """How long the current callback has been running, 0.0 when idle."""
        since = self._busy_since if self._pool is None else self._pool.busy_since()
        return 0.0 if since is None else time.monotonic() - since

    # -- internals ---------------------------------------------------------------------------

    def _change_zmq(self, op: bytes, prefix: bytes) -> None:
        count = self._zmq_refcount.get(prefix, 0) + (1 if op == _SUBSCRIBE else -1)
        if count > 0:
            self._zmq_refcount[prefix] = count
        else:
            self._zmq_refcount.pop(prefix, None)
        if (op == _SUBSCRIBE and count != 1) or (op == _UNSUBSCRIBE and count != 0):
            return
        if self._closed:
            raise RuntimeError("the event bus is closed (the module is shutting down)")
        receiver = self._receiver  # set under _subs_lock, which our callers hold
        if receiver is None or receiver is threading.current_thread():
            self._sub.setsockopt(zmq.SUBSCRIBE if op == _SUBSCRIBE else zmq.UNSUBSCRIBE, prefix)
        else:  # the receiver owns the socket from start() on, running or not yet
            self._command_out.send(op + prefix)

    def _await_probe(self, token: bytes, wait: float) -> bool:
        until = time.monotonic() + wait
        while (remaining := until - time.monotonic()) > 0:
            if not self._sub.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                return False
            while True:
                try:
                    frames = self._sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if frames[0] == token:
                    return True
                if not frames[0].startswith(INTERNAL_PREFIX):
                    self._early.append((frames[0], frames[1] if len(frames) == 2 else b""))
        return False

    def _receive(self) -> None:
        for topic, body in self._early:
            self._dispatch(topic, body)
        self._early.clear()
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._command_in, zmq.POLLIN)
        sub, commands = self._sub, self._command_in
        try:
            while True:
                ready = dict(poller.poll())
                if commands in ready and not self._apply_commands():
                    return
                if sub in ready:
                    self._drain(sub)
        except zmq.ContextTerminated:
            return

    def _apply_commands(self) -> bool:
        while True:
            try:
                command = self._command_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if command == _STOP:
                return False
            option = zmq.SUBSCRIBE if command[:1] == _SUBSCRIBE else zmq.UNSUBSCRIBE
            self._sub.setsockopt(option, command[1:])

    def _drain(self, sub: zmq.Socket[bytes]) -> None:
        """Dispatch what has arrived, up to a batch. A message is a topic frame and a body frame;
        any other shape is one bad frame. Whether more frames follow is read from each received
        Frame (`more`), which pyzmq fills in C: recv_multipart asks through getsockopt(RCVMORE),
        whose Python-level option lookup costs more than the recv calls themselves."""
        recv = sub.recv
        for _ in range(_DRAIN_BATCH):
            try:
                head = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if not head.more:
                self._bad_frame("a message of one frame, expected a topic and a body")
                continue
            body = recv(copy=False)  # a message arrives whole: the rest of it is here
            if body.more:
                extra = 1
                while recv(copy=False).more:
                    extra += 1
                self._bad_frame(f"a message of {2 + extra} frames, expected a topic and a body")
                continue
            self._dispatch(head.bytes, body.bytes)

    def _dispatch(self, topic: bytes, body: bytes) -> None:
        route = self._route_cache.get(topic)  # keyed by the raw topic: no decode when known
        if route is None:
            route = self._new_topic(topic, body)
            if route is None:
                return
        event_type, callbacks = route
        if not callbacks:
            return
        try:
            source, event_id, sent, data, seq = decode_envelope(body)
        except BadFrameError as exc:
            self._bad_frame(str(exc))
            return
        if seq and not self._count_seq(event_id, topic, seq, sent):
            self._bad_frame(
                f"{event_type}: sequence number {seq} from {shown(source)} is implausible"
            )
            return
        event = _new_event(Event, (event_type, data, source, event_id, sent))
        self.events_in += 1
        if self._pool is not None:
            self._pool.submit(event_type, event, callbacks)
            return
        # Inline rather than through _run_callbacks: this is the hot path of every module.
        self._busy_since = _monotonic()
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                self._callback_raised(callback, event)
        self._busy_since = None

    def _run_callbacks(self, event: Event, callbacks: tuple[EventCallback, ...]) -> None:
        """Call each callback with `event` (on the pool's threads)."""
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                self._callback_raised(callback, event)

    def _callback_raised(self, callback: EventCallback, event: Event) -> None:
        """Log (with the traceback being handled) and count a callback that raised."""
        with self._errors_lock:
            self.callback_errors += 1
        log.exception(
            "callback %s for %s (from %s) raised",
            getattr(callback, "__qualname__", repr(callback)),
            event.type,
            event.source,
        )

    def _new_topic(self, topic: bytes, body: bytes) -> tuple[str, tuple[EventCallback, ...]] | None:
        """The route of a topic not in the cache, validated as publish() validates it; None
        for a frame that is not an event (counted if it is bad)."""
        if topic.startswith(INTERNAL_PREFIX):
            if not topic.startswith(PROBE_PREFIX):  # another module's handshake: not for us
                self._bad_frame("a topic in the SDK's internal namespace")
            return None
        if topic.endswith(SYNC_SUFFIX):
            self._receive_sync(topic[: -len(SYNC_SUFFIX)], body)
            return None
        return self._valid_route(topic)

    def _valid_route(self, topic: bytes) -> tuple[str, tuple[EventCallback, ...]] | None:
        route = self._route_cache.get(topic)
        if route is None:
            try:
                route = self._route(validate_event_type(topic.decode()))
            except ValueError as exc:  # UnicodeDecodeError is one
                self._bad_frame(str(exc))
                return None
        return route

    def _receive_sync(self, topic: bytes, body: bytes) -> None:
        route = self._valid_route(topic)
        if route is None or not route[1]:
            return  # not a topic we route: its numbers are not ours to count
        try:
            prefix, seq, sent, first = decode_sync_first(body)
        except BadFrameError as exc:
            self._bad_frame(str(exc))
            return
        if not self._gaps.sync(prefix, topic, seq, sent, first):
            self._bad_frame(f"{route[0]}: sequence sync {seq} from {shown(prefix)} is implausible")

    def _route(self, event_type: str) -> tuple[str, tuple[EventCallback, ...]]:
        with self._subs_lock:
            callbacks = tuple(
                callback
                for parsed, entry in self._subscriptions.values()
                if parsed.matches(event_type)
                for callback in entry
            )
            route = (event_type, callbacks)
            if len(self._route_cache) < _TOPIC_CACHE_SIZE:
                self._route_cache[event_type.encode()] = route
        return route

    def _bad_frame(self, why: str) -> None:
        self.bad_frames += 1
        if self.bad_frames == 1 or self.bad_frames % 1000 == 0:
            log.warning("dropped a bad frame on the bus (%d so far): %s", self.bad_frames, why)
