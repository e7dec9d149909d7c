"""Grouped subscriptions of one bus: each event goes to one member of a group, not to all.

A DEALER socket to the broker's groups socket (see `broker.groups` for the frames) joins each
(group, pattern) this module subscribed to with `group=`; the broker sends each matching event to
one member, which runs its callbacks and acknowledges it. The socket belongs to the bus's receiver
thread, as the SUB socket does (before `start()`, to the thread that calls `initialize()`); other
threads hand their joins and leaves to it as commands (`command()`, `apply()`).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import zmq

from module_sdk import forks
from module_sdk.codec import BadFrameError, decode_envelope
from module_sdk.event import Event, EventCallback, Pattern, shown, validate_event_type

log = logging.getLogger(__name__)

CREDIT = 8  # events a member holds unacknowledged, at most: its prefetch
REJOIN_AFTER = 2.0  # seconds without a word from the broker (it pings every 0.5 s): join again
# What the socket monitor reports: a connection lost, and one made (the ZMTP handshake done, so
# what is sent next reaches that broker). A new connection after a lost one is a new broker.
_WATCHED = zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_MONITOR_EVENT = struct.Struct("=HI")  # a monitor message's first frame: event, value
RETRY_REFUSED = 5.0  # seconds between two tries of a join the broker refused (it was full, say)
MAX_GROUP_NAME = 64  # bytes, as the broker takes them
_TOPICS = 4096
_SEP = b"\x00"
_new_event = tuple.__new__

Key = tuple[str, str]  # (group, pattern text)


def check_group(group: object) -> str:
    """Return `group` if it is a valid group name, else raise ValueError."""
    if not isinstance(group, str):
        raise ValueError(f"group must be a string, got {type(group).__name__}")
    raw = group.encode()
    ok = 0 < len(raw) <= MAX_GROUP_NAME and (raw[:1].isalnum() or raw[:1] == b"_")
    if not ok or not all(c.isalnum() or c in "_.:#-" for c in group) or not raw.isascii():
        raise ValueError(
            f"invalid group {group[:80]!r}: 1-{MAX_GROUP_NAME} letters, digits, '_', '.', ':', "
            "'#' or '-', starting with a letter, digit or '_'"
        )
    return group


class GroupMember:
    """The grouped side of a `ZmqEventBus`: subscriptions by group, and their delivery."""

    def __init__(self, connect: Callable[[], zmq.Socket[bytes]]) -> None:
        """`connect` makes the DEALER socket, on the thread that owns it, at the first join."""
        self.socket: zmq.Socket[bytes] | None = None
        self.monitor: zmq.Socket[bytes] | None = None  # the socket's connection events
        self._connect = connect
        self._owner = forks.pid  # the module process: a fork of it must not go on receiving
        self._disconnected = False  # since the last connection made: the next one rejoins
        self._rejoining: set[Key] = set()  # joined again, not yet confirmed (logged when it is)
        self.subscriptions: dict[Key, tuple[Pattern, list[EventCallback], bool]] = {}
        self.joined: set[Key] = set()
        self.refused: dict[Key, str] = {}
        self.events_in = 0
        self.callback_errors = 0
        self.bad_frames = 0
        self.busy_since: float | None = None
        self._topics: dict[bytes, str] = {}
        self._early: list[list[bytes]] = []
        self._heard = time.monotonic()
        self._retried = time.monotonic()

    # -- subscriptions (the bus holds its lock around these) -----------------------------------

    def add(self, group: str, parsed: Pattern, callback: EventCallback, redeliver: bool) -> bool:
        """Record a subscription; True if the group must be joined (first callback, or a change
        of `redeliver`)."""
        key = (group, parsed.text)
        entry = self.subscriptions.get(key)
        if entry is None:
            self.subscriptions[key] = (parsed, [callback], redeliver)
            return True
        entry[1].append(callback)
        if redeliver and not entry[2]:
            self.subscriptions[key] = (parsed, entry[1], True)
            return True
        return False

    def remove(self, group: str, parsed: Pattern, callback: EventCallback) -> bool:
        """Forget a subscription; True if that was the group's last callback (leave it)."""
        key = (group, parsed.text)
        entry = self.subscriptions.get(key)
        if entry is None or callback not in entry[1]:
            return False
        entry[1].remove(callback)
        if entry[1]:
            return False
        del self.subscriptions[key]
        return True

    @staticmethod
    def command(op: bytes, key: Key) -> bytes:
        """A join (`J`) or leave (`L`) as one frame for the bus's command socket."""
        return op + key[0].encode() + _SEP + key[1].encode()

    def apply(self, command: bytes) -> None:
        """Carry out a `command()` on the socket's own thread."""
        group, _, pattern = command[1:].partition(_SEP)
        key = (group.decode(), pattern.decode())
        if command[:1] == b"J":
            self.send_join(key)
        else:
            self.send_leave(key)

    def send_join(self, key: Key) -> None:
        """Join (again) on the socket's thread; the broker takes it as an update if known."""
        entry = self.subscriptions.get(key)
        if entry is None:
            return
        flags = b"r" if entry[2] else b"-"
        group, pattern = key[0].encode(), key[1].encode()
        if self.socket is None:
            self.socket = self._connect()
            self.monitor = self.socket.get_monitor_socket(_WATCHED)
        self._send([b"J", group, pattern, str(CREDIT).encode(), flags])

    def send_leave(self, key: Key) -> None:
        """Leave on the socket's thread (unless the subscription came back meanwhile)."""
        if key in self.subscriptions or self.socket is None:
            return
        self.joined.discard(key)
        self._send([b"L", key[0].encode(), key[1].encode()])

    # -- the receiver thread --------------------------------------------------------------

    def await_joined(self, deadline: float) -> bool:
        """Before the receiver runs: wait until the broker confirmed every join (events that
        arrive meanwhile are kept for the receiver); False if `deadline` passes first."""
        while not self.subscriptions.keys() <= self.joined | self.refused.keys():
            remaining = deadline - time.monotonic()
            if (
                self.socket is None
                or remaining <= 0
                or not self.socket.poll(max(1, int(remaining * 1000)))
            ):
                return False
            self.drain(keep=True)
        return True

    def start(self) -> None:
        """On the receiver thread, before anything else: deliver what `await_joined` kept."""
        early, self._early = self._early, []
        for frames in early:
            self._deliver(frames)

    def drain(self, keep: bool = False) -> None:
        """Handle what the broker sent, up to a batch."""
        sock = self.socket
        if sock is None:
            return
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._heard = time.monotonic()
            kind = frames[0]
            if kind == b"E" and len(frames) == 6:
                if keep:
                    self._early.append(frames)
                else:
                    self._deliver(frames)
            elif kind == b"J" and len(frames) == 3:
                key = (frames[1].decode(), frames[2].decode())
                self.joined.add(key)
                if key in self._rejoining:
                    self._rejoining.discard(key)
                    log.info(
                        "the broker took group %r (%s) again (it restarted, or was silent)", *key
                    )
                if self.refused.pop(key, None) is not None:
                    log.info("the broker took group %r (%s) at last", key[0], key[1])
            elif kind == b"X" and len(frames) == 4:
                self._refused(frames[1], frames[2], frames[3])
            elif kind != b"P":
                self._bad_frame(f"a message of kind {kind[:16]!r} from the groups socket")

    def watch(self) -> None:
        """Read the socket's connection events: a connection made after one was lost is to a
        broker that may know nobody (it restarted): join again at once, not after
        REJOIN_AFTER of silence, so that its grouped delivery takes our events from then on."""
        monitor = self.monitor
        if monitor is None:
            return
        reconnected = False
        for _ in range(64):
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
                continue
            event = _MONITOR_EVENT.unpack(frames[0])[0]
            if event == zmq.EVENT_DISCONNECTED:
                self._disconnected = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED and self._disconnected:
                self._disconnected = False
                reconnected = True
        if reconnected and self.subscriptions:
            self._rejoin(time.monotonic())

    def tick(self) -> None:
        """Join again when the broker has been silent for long (hung, say: a restart is seen at
        once by `watch`), and try the joins it refused again every RETRY_REFUSED (its table may
        have room now)."""
        now = time.monotonic()
        if self.subscriptions and now - self._heard > REJOIN_AFTER:
            self._rejoin(now)
        elif self.refused and now - self._retried > RETRY_REFUSED:
            self._retried = now
            for key in list(self.refused):
                if key in self.subscriptions:
                    self.send_join(key)  # refused again: quietly, it was logged once
                else:
                    del self.refused[key]

    def _rejoin(self, now: float) -> None:
        """Join every group again; until the broker confirms them, none counts as joined (what
        `await_joined`, and so a bus handshake, waits for)."""
        self._heard = self._retried = now
        self.joined.clear()
        self._rejoining = set(self.subscriptions)
        for key in list(self.subscriptions):
            self.send_join(key)

    def close(self) -> None:
        """Say goodbye, so that what is unacknowledged goes to another member at once, and
        close the socket."""
        if self.socket is None:
            return
        self._send([b"B"])  # also after the last leave: what arrived since is given back
        if self.monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.socket.disable_monitor()
            self.monitor.close(linger=0)
        self.socket.close()

    def _send(self, frames: list[bytes]) -> None:
        """Send without ever blocking the receiver: with the broker away long enough for the
        queue to fill, what does not fit is dropped (joins are sent again; acks are moot)."""
        assert self.socket is not None
        with contextlib.suppress(zmq.Again):
            self.socket.send_multipart(frames, zmq.NOBLOCK)

    def _refused(self, group: bytes, pattern: bytes, why: bytes) -> None:
        key = (group.decode(errors="replace"), pattern.decode(errors="replace"))
        if key not in self.refused:
            log.error(
                "the broker refused group %r (%s): %s (tried again every %gs)",
                key[0],
                key[1],
                why.decode(errors="replace"),
                RETRY_REFUSED,
            )
        self.refused[key] = why.decode(errors="replace")

    def _deliver(self, frames: list[bytes]) -> None:
        _, tag, group, pattern, topic, body = frames
        try:
            entry = self.subscriptions.get((group.decode(), pattern.decode()))
        except ValueError as exc:
            self._bad_frame(str(exc))
            self._send([b"A", tag])  # garbage: acknowledged, never to come again
            return
        if entry is None:
            # Unsubscribed meanwhile: no ack, so that the leave (or the goodbye) that follows
            # gives it back to the broker, which redelivers it or counts it lost, per the group.
            return
        try:
            self._call(entry[1], self._event_type(topic), body)
        except (BadFrameError, ValueError) as exc:
            self._bad_frame(str(exc))
        self._send([b"A", tag])  # done with it, whatever it was

    def _event_type(self, topic: bytes) -> str:
        event_type = self._topics.get(topic)
        if event_type is None:
            event_type = validate_event_type(topic.decode())
            if len(self._topics) < _TOPICS:
                self._topics[topic] = event_type
        return event_type

    def _call(self, callbacks: list[EventCallback], event_type: str, body: bytes) -> None:
        source, event_id, sent, data, _ = decode_envelope(body)
        event: Any = _new_event(Event, (event_type, data, source, event_id, sent))
        self.events_in += 1
        self.busy_since = time.monotonic()
        for callback in tuple(callbacks):
            try:
                callback(event)
            except BaseException:  # sys.exit() too: it would end the receiver's thread
                self.callback_errors += 1
                log.exception(
                    "callback %s for %s (from %s) raised",
                    getattr(callback, "__qualname__", repr(callback)),
                    event_type,
                    shown(source),
                )
            if forks.pid != self._owner:  # it forked and returned in the child: see receive.py
                name = getattr(callback, "__qualname__", repr(callback))
                forks.end_forked_child(self._owner, f"callback {name} for {event_type}")
        self.busy_since = None

    def _bad_frame(self, why: str) -> None:
        self.bad_frames += 1
        if self.bad_frames == 1 or self.bad_frames % 1000 == 0:
            log.warning("dropped a bad grouped event (%d so far): %s", self.bad_frames, why)
