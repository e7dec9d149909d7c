"""The ZeroMQ event bus of a child process: a PUB socket to the broker, a SUB socket from it.

Threads: `publish()` may be called from any thread (one lock guards the PUB socket). Callbacks run on
one receiver thread that owns the SUB socket once `start()` has run; before that, the thread that
calls `initialize()` owns it, so subscriptions made in `initialize()` apply at once. Subscription
changes from other threads reach the receiver through an inproc command socket, in order. With
`concurrency` > 1 the receiver hands each event to a pool of that many callback threads instead
(`module_sdk.dispatch`: in order per event type).
Grouped subscriptions (`subscribe(..., group=...)`) arrive on a DEALER socket of their own, made at
the first one and owned by the same threads (see `module_sdk.groups`); the receive path of the
ungrouped ones is in `module_sdk.receive`.
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

from module_sdk import forks
from module_sdk.connect import HandshakeTimeoutError, bus_sockets, prepare, round_trip
from module_sdk.dispatch import CallbackPool
from module_sdk.envelopes import Envelopes
from module_sdk.event import EventCallback, Pattern, validate_event_type
from module_sdk.groups import GroupMember, check_group
from module_sdk.receive import STOP, SUBSCRIBE, UNSUBSCRIBE, ReceivePath
from module_sdk.sequence import GapCounter

__all__ = ["HandshakeTimeoutError", "ZmqEventBus"]

log = logging.getLogger(__name__)
# pyzmq's Socket.send is a Python layer (for the draft API's routing_id and group) over its
# backend's send; calling the backend's directly is the same send at a third of the cost.
_send_frame = zmq.backend.Socket.send

_TOPIC_CACHE_SIZE = 4096
_get_ident = threading.get_ident
# The lock is not reentrant, and must not be: a second event sent between the frames of one
# would corrupt both. Waiting for it on the thread that holds it would wait forever.
_REENTERED = (
    "publish() called on a thread that is inside publish() already (from a signal handler?):"
    " it would wait for itself forever; have the handler hand the event to another thread"
)


class ZmqEventBus(ReceivePath):
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
        groups_endpoint: str | None = None,
        group: str | None = None,
        redeliver: bool = False,
        sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]] | None = None,
    ) -> None:
        """`groups_endpoint`: the broker's groups socket (grouped subscriptions need it);
        `group`, `redeliver`: the defaults of `subscribe` (the module's settings); `sockets`:
        the PUB and SUB sockets `bus_sockets` made for these settings already (a standby's)."""
        self._source = source
        self._owner = forks.pid  # the module process: its forks may not use the bus
        self._pub, self._sub = sockets or bus_sockets(
            context, xsub_endpoint, xpub_endpoint, high_water_mark, max_message_size, curve
        )
        command_endpoint = f"inproc://module-sdk-bus-{id(self)}"
        # No high-water mark: a (un)subscribe sends its command under _subs_lock, and one that
        # blocked on a full queue (the receiver busy in a long callback) deadlocked with the
        # receiver, which takes that lock to route its next event. The module's own calls are
        # the bound of what queues.
        self._command_in = context.socket(zmq.PAIR)
        self._command_in.setsockopt(zmq.RCVHWM, 0)
        self._command_in.bind(command_endpoint)
        self._command_out = context.socket(zmq.PAIR)
        self._command_out.setsockopt(zmq.SNDHWM, 0)
        self._command_out.connect(command_endpoint)
        self._groups: GroupMember | None = None
        if groups_endpoint is not None:  # its socket only once a grouped subscription needs it

            def connect() -> zmq.Socket[bytes]:
                dealer = context.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 200)  # the goodbye at close
                prepare(dealer, curve)
                dealer.connect(groups_endpoint)
                return dealer

            self._groups = GroupMember(connect)
        self._default_group = check_group(group) if group else None
        self._default_redeliver = redeliver

        # Ids, sequence numbers, packing and size checks; `pack` runs under _pub_lock.
        self._envelopes = Envelopes(
            source, f"{os.getpid():x}-{os.urandom(3).hex()}-", max_message_size
        )
        self._pack = self._envelopes.pack  # bound once: it runs for every event
        self._max_body = self._envelopes.max_body
        self._pub_lock = threading.Lock()
        self._pub_thread = 0  # the thread inside _pub_lock (publish or sync), if any
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
        # Subscription changes sent to the broker, and how many of them the last handshake
        # proved: see `proven`.
        self._changes = 0
        self._proven = -1
        self._prove_first: float | None = None  # see `prove_before_publishing`
        self.proof_failed: HandshakeTimeoutError | None = None  # that first proof's failure

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

    def subscribe(
        self,
        pattern: str,
        callback: EventCallback,
        *,
        group: str | None = None,
        redeliver: bool | None = None,
    ) -> None:
        """See `module_sdk.api.EventBus.subscribe`."""
        if forks.pid != self._owner:
            raise forks.not_the_owner(self._owner)
        parsed = Pattern.parse(pattern)
        if not callable(callback):
            raise TypeError(f"callback for {pattern!r} is not callable")
        group = self._default_group if group is None else group
        if redeliver is not None and not isinstance(redeliver, bool):  # "no" would be true
            raise TypeError(f"redeliver: expected True or False, got {redeliver!r}")
        if group:
            again = self._default_redeliver if redeliver is None else redeliver
            self._grouped(b"J", check_group(group), parsed, callback, again)
            return
        with self._subs_lock:
            entry = self._subscriptions.setdefault(parsed.text, (parsed, []))
            entry[1].append(callback)
            self._route_cache.clear()
            self._gaps.forget()  # what passed while we were not subscribed was no drop
            if len(entry[1]) == 1:
                self._change_zmq(SUBSCRIBE, parsed.zmq_prefix)

    def unsubscribe(
        self, pattern: str, callback: EventCallback, *, group: str | None = None
    ) -> None:
        """See `module_sdk.api.EventBus.unsubscribe`."""
        if forks.pid != self._owner:
            raise forks.not_the_owner(self._owner)
        parsed = Pattern.parse(pattern)
        group = self._default_group if group is None else group
        if group:
            self._grouped(b"L", group, parsed, callback, False)
            return
        with self._subs_lock:
            entry = self._subscriptions.get(parsed.text)
            if entry is None or callback not in entry[1]:
                return
            entry[1].remove(callback)
            self._route_cache.clear()
            if not entry[1]:
                del self._subscriptions[parsed.text]
                self._change_zmq(UNSUBSCRIBE, parsed.zmq_prefix)

    def clear(self) -> None:
        """See `module_sdk.api.EventBus.clear`."""
        if forks.pid != self._owner:
            raise forks.not_the_owner(self._owner)
        with self._subs_lock:
            for parsed, _ in self._subscriptions.values():
                self._change_zmq(UNSUBSCRIBE, parsed.zmq_prefix)
            self._subscriptions.clear()
            self._route_cache.clear()
            if self._groups is not None:
                for (group, _), (parsed, callbacks, _) in list(self._groups.subscriptions.items()):
                    for callback in list(callbacks):
                        self._grouped(b"L", group, parsed, callback, False)

    def publish(self, event_type: str, data: Any = None) -> None:
        """See `module_sdk.api.EventBus.publish`."""
        if forks.pid != self._owner:
            raise forks.not_the_owner(self._owner)
        try:
            topic = self._topics.get(event_type)
        except TypeError:  # unhashable: a list, say (a hashable non-string fails just below)
            raise ValueError(
                f"event type: expected a string, got {type(event_type).__name__}"
            ) from None
        if topic is None:
            topic = validate_event_type(event_type).encode()
            if len(topic) > self._max_body:
                raise ValueError(f"event type {event_type!r} is over the bus's max_message_size")
            if len(self._topics) < _TOPIC_CACHE_SIZE:
                self._topics[event_type] = topic
        if self._prove_first is not None:  # before the first event, not lost to our filter
            self._prove_now()
        thread = _get_ident()
        if self._pub_thread == thread:  # a signal handler, run while this thread publishes
            raise RuntimeError(_REENTERED)
        with self._pub_lock:  # packed inside: `seq` must follow the order of the sends
            self._pub_thread = thread
            try:
                if self._closed:
                    raise RuntimeError("the event bus is closed (the module is shutting down)")
                body = self._pack(event_type, topic, data)
                _send_frame(self._pub, topic, zmq.SNDMORE)
                _send_frame(self._pub, body)
                self.events_out += 1
            finally:
                self._pub_thread = 0

    def ready(self) -> None:
        """See `module_sdk.api.EventBus.ready`."""
        hook = self.on_ready
        if hook is not None:
            hook()

    # -- lifecycle, driven by the shim ---------------------------------------------------------

    def prove_before_publishing(self, timeout: float) -> None:
        """Leave the first handshake to the first `publish` (with `timeout`), if one comes
        before the shim's own handshake once initialize() has returned: a module that publishes
        nothing in initialize() then proves its bus once, not twice (about 2 ms of each start).
        Until proven, our publisher may not have the subscriptions of the modules already
        running, and would drop an event they want. If that proof fails, that publish and any
        later one raise HandshakeTimeoutError at once, and `proof_failed` tells the shim, which
        then exits as for any bus failure, whichever thread published."""
        self._prove_first = timeout

    def _prove_now(self) -> None:
        with self._subs_lock:  # checked again: another thread may have proven it meanwhile
            timeout = self._prove_first
            if timeout is not None or self.proof_failed is not None:
                self.prove(timeout or 0.0)

    def prove(self, timeout: float) -> None:
        """`handshake`, unless nothing changed since the last one; a failure is kept in
        `proof_failed`, and raised again at once by this and by `publish` from then on (once
        closed, nothing is proven)."""
        with self._subs_lock:
            if self.proof_failed is not None:
                raise self.proof_failed
            if self._closed:
                return
            try:
                self.handshake(timeout)
            except HandshakeTimeoutError as exc:
                self.proof_failed = exc
                raise

    def handshake(self, timeout: float) -> None:
        """Send a probe through the broker until it comes back on our own SUB socket.

        When it does, every subscription the broker knew before (those of modules already running)
        has reached our PUB socket, and every subscription we made before has reached the broker, since
        each direction is one ordered pipe. Events that arrive meanwhile are kept for the callbacks.
        Before that, the broker must have confirmed every group joined so far.
        """
        with self._subs_lock:
            if self.proven():  # by another thread while we waited for the lock: nothing new
                return
            deadline = time.monotonic() + timeout
            changes = self._changes  # what this handshake proves, if it succeeds
            if self._groups is not None and not self._groups.await_joined(deadline):
                raise HandshakeTimeoutError(
                    f"the broker did not confirm the groups in {timeout:g}s"
                )
            if not round_trip(self._pub, self._sub, self._pub_lock, deadline, self._early):
                raise HandshakeTimeoutError(f"no reply from the broker within {timeout:g}s")
            self._proven = changes
            self._prove_first = None

    def proven(self) -> bool:
        """Whether a handshake completed after the last change of subscriptions (or group
        membership): then another would prove nothing new, since the path it proved is one
        ordered pipe each way."""
        return self._proven == self._changes

    def sync(self) -> None:
        """Tell the subscribers of each topic we published on lately the last seq we sent there,
        so that they can count events lost at the end of a burst without waiting for the next
        one (see `SyncSchedule`), and read the subscriptions forwarded to us meanwhile. The shim
        calls this on each heartbeat tick."""
        frames = self._envelopes.syncs()
        with self._pub_lock:  # the events counted by these seqs have all been sent
            self._pub_thread = _get_ident()  # on the main thread, where signal handlers run
            try:
                if self._closed:
                    return
                for topic, body in frames:
                    _send_frame(self._pub, topic, zmq.SNDMORE)
                    _send_frame(self._pub, body)
                # ZeroMQ reads the subscriptions the broker forwards to a PUB socket only when
                # the socket is used: a module that seldom publishes left them queued at the
                # broker (another subscribing and unsubscribing in a loop grew it by 10 MB/s).
                self._pub.getsockopt(zmq.EVENTS)
            finally:
                self._pub_thread = 0

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
        busy past `timeout` (its sockets are then left to process exit). Publishing ends at
        once, whatever still runs: after `shutdown()` nothing goes out."""
        with self._pub_lock:
            self._closed = True
        with self._subs_lock:
            if self._receiver is not None and self._receiver.is_alive():
                self._command_out.send(STOP)
        deadline = time.monotonic() + timeout
        # The pool first: a receiver waiting for room in it is let go at once.
        if self._pool is not None and not self._pool.stop(timeout):
            return False
        if self._receiver is not None:
            self._receiver.join(max(0.0, deadline - time.monotonic()))
            if self._receiver.is_alive():
                return False
        with self._pub_lock:
            self._pub.close()
        with self._subs_lock:
            if self._groups is not None:
                self._groups.close()
            for sock in (self._sub, self._command_in, self._command_out):
                sock.close(linger=0)
        return True

    def counters(self) -> dict[str, int]:
        """Events in and out, callback errors and dropped bad frames, since the start."""
        grouped = self._groups
        return {
            "events_in": self.events_in + (grouped.events_in if grouped else 0),
            "events_out": self.events_out,
            "callback_errors": self.callback_errors + (grouped.callback_errors if grouped else 0),
            "bad_frames": self.bad_frames + (grouped.bad_frames if grouped else 0),
            "dropped": self.dropped,
        }

    def busy_for(self) -> float:
        """How long the current callback has been running, 0.0 when idle."""
        since = self._busy_since if self._pool is None else self._pool.busy_since()
        if since is None and self._groups is not None:
            since = self._groups.busy_since
        return 0.0 if since is None else time.monotonic() - since
