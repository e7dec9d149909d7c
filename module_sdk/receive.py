"""The receive path of a `ZmqEventBus`: from frames on its SUB socket to its callbacks.

`ReceivePath` is a base class of the bus: the methods its receiver thread runs per message, and
those that hand it the subscription changes of other threads (it owns the sockets), with
the state they share with the bus declared here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NoReturn

import zmq

from module_sdk import forks
from module_sdk.codec import BadFrameError, decode_envelope, decode_sync_first
from module_sdk.dispatch import CallbackPool
from module_sdk.event import Event, EventCallback, Pattern, shown, validate_event_type
from module_sdk.groups import GroupMember
from module_sdk.protocol import INTERNAL_PREFIX, PROBE_PREFIX, SYNC_SUFFIX
from module_sdk.sequence import GapCounter

log = logging.getLogger("module_sdk.bus")
_monotonic = time.monotonic
# An Event straight from its fields, without the Python-level __new__ a NamedTuple has.
_new_event = tuple.__new__
_TOPIC_CACHE_SIZE = 4096
_DRAIN_BATCH = 1024

Route = tuple[str, tuple[EventCallback, ...]]
# Commands to the receiver thread on its PAIR socket (it owns the SUB socket): stop, or change a
# subscription (then the prefix follows the byte); "J"/"L" are group joins and leaves.
STOP = b"stop"
SUBSCRIBE = b"S"
UNSUBSCRIBE = b"U"


class ReceivePath:
    """Dispatch of received frames; the bus sets these attributes up in its `__init__`."""

    _subs_lock: threading.RLock
    _subscriptions: dict[str, tuple[Pattern, list[EventCallback]]]
    _route_cache: dict[bytes, Route]
    _gaps: GapCounter
    _count_seq: Callable[[str, bytes, int, float], bool]  # _gaps.event, bound once
    events_in: int
    callback_errors: int
    bad_frames: int
    _busy_since: float | None
    _errors_lock: threading.Lock  # callbacks may raise on several threads at once
    _pool: CallbackPool | None  # concurrency > 1: callbacks run on a pool (module_sdk.dispatch)
    _sub: zmq.Socket[bytes]
    _command_in: zmq.Socket[bytes]
    _groups: GroupMember | None
    _early: list[tuple[bytes, bytes]]  # what arrived during the handshakes, before start()
    _zmq_refcount: dict[bytes, int]  # subscriptions per ZeroMQ prefix
    _changes: int  # subscription changes sent to the broker (see ZmqEventBus.proven)
    _closed: bool
    _receiver: threading.Thread | None
    _command_out: zmq.Socket[bytes]  # to the receiver's _command_in
    _owner: int  # the module process's pid: a fork of it must not go on receiving

    # -- subscription changes: applied by the thread that owns the sockets ------------------

    def _change_zmq(self, op: bytes, prefix: bytes) -> None:
        count = self._zmq_refcount.get(prefix, 0) + (1 if op == SUBSCRIBE else -1)
        if count > 0:
            self._zmq_refcount[prefix] = count
        else:
            self._zmq_refcount.pop(prefix, None)
        if (op == SUBSCRIBE and count != 1) or (op == UNSUBSCRIBE and count != 0):
            return
        if self._closed:
            raise RuntimeError("the event bus is closed (the module is shutting down)")
        self._changes += 1
        receiver = self._receiver  # set under _subs_lock, which our callers hold
        if receiver is None or receiver is threading.current_thread():
            self._sub.setsockopt(zmq.SUBSCRIBE if op == SUBSCRIBE else zmq.UNSUBSCRIBE, prefix)
        else:  # the receiver owns the socket from start() on, running or not yet
            self._command_out.send(op + prefix)

    def _grouped(
        self, op: bytes, group: str, parsed: Pattern, callback: EventCallback, redeliver: bool
    ) -> None:
        if self._groups is None:
            raise RuntimeError(
                "grouped subscriptions need the broker's groups socket (on a tcp bus: set"
                " bus.groups_port in main.yaml)"
            )
        with self._subs_lock:
            groups = self._groups
            if op == b"J" and not groups.add(group, parsed, callback, redeliver):
                return
            if op == b"L" and not groups.remove(group, parsed, callback):
                return
            if self._closed:
                raise RuntimeError("the event bus is closed (the module is shutting down)")
            self._changes += 1
            receiver = self._receiver
            if receiver is None or receiver is threading.current_thread():
                groups.apply(groups.command(op, (group, parsed.text)))
            else:
                self._command_out.send(groups.command(op, (group, parsed.text)))

    # -- receiving ----------------------------------------------------------------------

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
            except BaseException:  # sys.exit() too: it would end this thread, deaf, silently
                self._callback_raised(callback, event)
            if forks.pid != self._owner:
                _returned_in_fork(self._owner, callback, event)
        self._busy_since = None

    def _run_callbacks(self, event: Event, callbacks: tuple[EventCallback, ...]) -> None:
        """Call each callback with `event` (on the pool's threads)."""
        for callback in callbacks:
            try:
                callback(event)
            except BaseException:  # as in _dispatch
                self._callback_raised(callback, event)
            if forks.pid != self._owner:
                _returned_in_fork(self._owner, callback, event)

    def _callback_raised(self, callback: EventCallback, event: Event) -> None:
        """Log (with the traceback being handled) and count a callback that raised."""
        with self._errors_lock:
            self.callback_errors += 1
        log.exception(
            "callback %s for %s (from %s) raised",
            getattr(callback, "__qualname__", repr(callback)),
            event.type,
            shown(event.source),  # a forged one: cut, and no line breaks of its own
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

    def _receive(self) -> None:
        """The receiver thread: what arrived early, then the SUB socket, the commands and the
        group socket, until told to stop."""
        for topic, body in self._early:
            self._dispatch(topic, body)
        self._early.clear()
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._command_in, zmq.POLLIN)
        sub, commands, groups = self._sub, self._command_in, self._groups
        member = None  # the groups socket, once a grouped subscription made one
        if groups is not None:
            groups.start()
        try:
            while True:
                if member is None and groups is not None and groups.socket is not None:
                    member = groups.socket
                    poller.register(member, zmq.POLLIN)
                    if groups.monitor is not None:  # its connections: see GroupMember.watch
                        poller.register(groups.monitor, zmq.POLLIN)
                ready = dict(poller.poll(None if member is None else 500))
                if commands in ready and not self._apply_commands():
                    return
                if sub in ready:
                    self._drain(sub)
                if member is not None and groups is not None:
                    if member in ready:
                        groups.drain()
                    if groups.monitor in ready:
                        groups.watch()
                    groups.tick()
        except zmq.ContextTerminated:
            return

    def _apply_commands(self) -> bool:
        while True:
            try:
                command = self._command_in.recv(zmq.NOBLOCK)
            except zmq.Again:
                return True
            if command == STOP:
                return False
            if command[:1] in (b"J", b"L") and self._groups is not None:
                self._groups.apply(command)
                continue
            option = zmq.SUBSCRIBE if command[:1] == SUBSCRIBE else zmq.UNSUBSCRIBE
            self._sub.setsockopt(option, command[1:])


def _returned_in_fork(owner: int, callback: EventCallback, event: Event) -> NoReturn:
    """`callback` forked and returned in the child: the child ends, instead of receiving on
    copies of sockets that a fork breaks (it spun there, unseen, and forked again)."""
    name = getattr(callback, "__qualname__", repr(callback))
    forks.end_forked_child(owner, f"callback {name} for {event.type}")
