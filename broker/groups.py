"""Grouped delivery: each event of a group's pattern goes to one member of the group.

Members connect a DEALER socket to the broker's ROUTER socket at the groups endpoint and join
groups there; the dispatcher (its own thread, owning its sockets) subscribes a SUB socket of its own
to the broker's XPUB for each group's prefix, so the ungrouped path is untouched: libzmq's proxy
forwards as before, and this SUB is one more subscriber, only of grouped topics. What arrives is
handed to one member (see `broker.group_table`), which acknowledges it once its callbacks ran.

Frames on the groups socket (after the ROUTER's routing id), member -> broker:
  `J name pattern credit flags`: join (`credit`: ASCII digits; `flags`: `r` for redelivery);
  `L name pattern`: leave; `A tags`: acknowledge (8 bytes a tag, any number of them);
  `B`: goodbye (closing); `S`: asks for the counters.
Broker -> member: `E tag name pattern topic body`: one event; `J name pattern`: joined;
  `X name pattern why`: refused; `P`: a ping; `S json`: the counters.

Liveness: the ROUTER is mandatory, so a send to a member whose connection is gone fails at once.
Every `PING_INTERVAL` each member gets a ping: a crashed member is found within that, and its
unacknowledged events are redelivered or counted lost. A member that hears nothing for a while
joins again (after a broker restart, the new broker knows nobody). What waits to go to one member
is bounded (`SEND_HWM` messages): a member whose queue is full when an event or a reply is due
does not read, and is dropped as a crashed one is; `S` is answered ten times a second at most.

The payload is never decoded; the topic frame is read to match patterns. What a member sends is
checked: each frame's size (libzmq drops a peer past MAX_MEMBER_MESSAGE), the frame count, names,
and the table's sizes; a bad message is dropped and counted. The frame count is checked only once
libzmq hands the message over, whole: the frames of a message never finished (the last one
always says more follows) are buffered by libzmq without limit. Nothing here bounds that; the
supervisor's restart of the broker past `bus.broker_memory_limit_mb` does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from broker.group_names import JoinRefusedError
from broker.group_state import Delivery
from broker.group_table import GroupTable

log = logging.getLogger(__name__)

PING_INTERVAL = 0.5  # seconds
STATS_INTERVAL = 1.0  # seconds between two reports of changed counters, at least
MAX_FRAMES = 8  # in one message from a member
MAX_MEMBER_MESSAGE = 2048  # bytes of one frame from a member: names, a pattern, a few acks
SEND_HWM = 1024  # messages queued to one member: its credit (256 at most), pings and replies
STATS_EVERY = 0.1  # seconds: one `S` answer per asker at most this often (more are coalesced)
_TAG = 8
_STOP = b"stop"

StatsCallback = Callable[[dict[str, Any]], None]


class GroupDispatcher:
    """The grouped-delivery thread of a broker: `start()` binds (or raises zmq.ZMQError),
    `stop()` asks it to finish, `join()` waits."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        xpub_inproc: str,
        *,
        high_water_mark: int = 100_000,
        curve_secret: bytes | None = None,
        on_stats: StatsCallback | None = None,
        bind: Callable[[zmq.Socket[bytes], str], None] | None = None,
        kept: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """`kept`: the (name, pattern) of redelivering groups to queue for from the start (those
        the broker had before it restarted), before any member joins them again."""
        self.endpoint = endpoint
        self._kept = kept
        self.table = GroupTable()
        self.bad_frames = 0
        self.refused = 0
        self._context = context
        self._xpub_inproc = xpub_inproc
        self._hwm = high_water_mark
        self._curve_secret = curve_secret
        self._on_stats = on_stats
        self._bind = bind or (lambda sock, where: sock.bind(where))
        self._control_endpoint = f"inproc://broker-groups-control-{id(self)}"
        self._control: zmq.Socket[bytes] | None = None
        self._bound = threading.Event()
        self._error: zmq.ZMQError | None = None
        self._thread = threading.Thread(target=self._run, name="broker-groups", daemon=True)
        self._prefixes: dict[bytes, int] = {}
        self._reported: str | None = None
        self._answered: dict[bytes, float] = {}  # asker -> when it last got the counters
        self._asking: set[bytes] = set()  # askers owed the counters, once STATS_EVERY passed

    def start(self, timeout: float = 5.0) -> None:
        """Bind the groups endpoint and start dispatching; raise zmq.ZMQError if binding fails."""
        self._control = self._context.socket(zmq.PAIR)
        self._control.setsockopt(zmq.LINGER, 0)
        self._control.bind(self._control_endpoint)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise zmq.ZMQError(zmq.ETIMEDOUT, "the groups socket did not bind in time")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Ask the thread to finish."""
        if self._control is not None and self._thread.is_alive():
            self._control.send(_STOP)

    def is_alive(self) -> bool:
        """Whether the thread runs: False once `stop()` took effect, or after a failure."""
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread, then close the control socket."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._control is not None:
            self._control.close()
            self._control = None

    def stats(self) -> dict[str, Any]:
        """Every group's counters and the socket's: what `S` answers and `on_stats` gets."""
        return {
            "groups": self.table.stats(),
            "members": len(self.table.members),
            "bad_frames": self.bad_frames,
            "refused": self.refused,
        }

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        router = self._context.socket(zmq.ROUTER)
        sub = self._context.socket(zmq.SUB)
        control = self._context.socket(zmq.PAIR)
        try:
            try:
                self._configure(router, sub)
                control.connect(self._control_endpoint)
                self._bind(router, self.endpoint)
                sub.connect(self._xpub_inproc)
                self._keep(sub)  # before `ready`: their events from then on are queued
            except zmq.ZMQError as exc:
                self._error = exc
                return
            finally:
                self._bound.set()
            self._loop(router, sub, control)
        except zmq.ContextTerminated:
            pass
        except Exception:  # a bug: say so; the process notices the thread gone (is_alive)
            log.exception("the grouped-delivery thread failed")
        finally:
            for sock in (router, sub, control):
                sock.close(linger=0)

    def _configure(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a member gone fails: see ping
        # Bounded, so that a member that never reads costs at most this much: a send that finds
        # its queue full (EAGAIN) drops the member; pings merely wait for room.
        router.setsockopt(zmq.SNDHWM, SEND_HWM)
        router.setsockopt(zmq.RCVHWM, self._hwm)
        router.setsockopt(zmq.MAXMSGSIZE, MAX_MEMBER_MESSAGE)
        router.setsockopt(zmq.HANDSHAKE_IVL, 10_000)
        if self._curve_secret is not None:
            from broker.auth import make_server  # noqa: PLC0415  (tcp only)

            make_server(router, self._curve_secret)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, self._hwm)
        sub.setsockopt(zmq.SNDHWM, 0)  # our subscriptions: libzmq drops them past a mark

    def _loop(
        self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes], control: zmq.Socket[bytes]
    ) -> None:
        poller = zmq.Poller()
        for sock in (router, sub, control):
            poller.register(sock, zmq.POLLIN)
        next_ping = next_report = time.monotonic()
        while True:
            wait = STATS_EVERY if self._asking else PING_INTERVAL
            ready = dict(poller.poll(int(wait * 1000)))
            if control in ready:
                return
            if router in ready:
                self._drain_members(router, sub)
            if sub in ready:
                self._drain_events(router, sub)
            now = time.monotonic()
            if self._asking:
                self._answer_stats(router, sub, now)
            if now >= next_ping:
                self._answered = {k: t for k, t in self._answered.items() if now - t < STATS_EVERY}
                self._ping(router, sub)
                next_ping = now + PING_INTERVAL
            if now >= next_report:
                self._report()
                next_report = now + STATS_INTERVAL

    def _keep(self, sub: zmq.Socket[bytes]) -> None:
        for name, pattern in self._kept:
            try:
                prefix = self.table.keep(name, pattern)
            except JoinRefusedError as exc:
                log.warning("group %r (%r) not kept: %s", name[:80], pattern[:80], exc)
                continue
            if prefix is not None:
                self._subscribe(sub, prefix, 1)

    def _drain_events(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        for _ in range(1024):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:  # the broker's XSUB let it in; not an event of ours
                continue
            topic, body = frames
            if topic[:1] == b"\x00" or topic[-1:] == b"\x00":  # probes, sequence syncs
                continue
            self._send(router, sub, self.table.route(topic, body))

    def _drain_members(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        for _ in range(1024):
            frames = _read_bounded(router)
            if frames is None:
                return
            if len(frames) < 2 or len(frames) > MAX_FRAMES:
                self._bad(f"a message of {len(frames)} frames")
                continue
            self._handle(router, sub, frames[0], frames[1], frames[2:])

    def _handle(
        self,
        router: zmq.Socket[bytes],
        sub: zmq.Socket[bytes],
        member: bytes,
        kind: bytes,
        args: list[bytes],
    ) -> None:
        table = self.table
        if kind == b"A" and len(args) == 1 and len(args[0]) % _TAG == 0:
            tags = args[0]
            for at in range(0, len(tags), _TAG):
                self._send(router, sub, table.ack(member, tags[at : at + _TAG]))
        elif kind == b"J" and len(args) == 4 and args[2].isdigit() and len(args[2]) <= 4:
            name, pattern = args[0], args[1]
            try:
                prefix = table.join(member, name, pattern, int(args[2]), args[3] == b"r")
            except JoinRefusedError as exc:
                self.refused += 1
                self._reply(router, sub, member, [b"X", name, pattern, str(exc).encode()])
                return
            for gone in table.evicted():  # a group without members made room
                self._subscribe(sub, gone, -1)
            if prefix is not None:
                self._subscribe(sub, prefix, 1)
            self._reply(router, sub, member, [b"J", name, pattern])
            self._send(router, sub, table.pump_all())
        elif kind == b"L" and len(args) == 2:
            prefix = table.leave(member, args[0], args[1])
            if prefix is not None:
                self._subscribe(sub, prefix, -1)
            self._send(router, sub, table.pump_all())
        elif kind == b"B" and not args:  # a goodbye: what it held was not run, not its fault
            self._drop(router, sub, member, failed=False)
        elif kind == b"S" and not args:
            self._asking.add(member)
            self._answer_stats(router, sub, time.monotonic())
        else:
            self._bad(f"a message of kind {kind[:16]!r} with {len(args)} arguments")

    def _send(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes], out: list[Delivery]) -> None:
        at = 0
        while at < len(out):  # grows when a member turns out gone: its events go to others
            member, tag, name, pattern, topic, body = out[at]
            at += 1
            if member not in self.table.members:
                continue  # dropped while this batch went out: its events are queued again
            try:
                router.send_multipart([member, b"E", tag, name, pattern, topic, body], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    raise
                if exc.errno == zmq.EAGAIN:
                    log.warning("a group member does not read (its queue is full): dropped")
                out.extend(self._drop_quietly(sub, member, unsent=tag))

    def _reply(
        self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes], member: bytes, frames: list[bytes]
    ) -> None:
        """Answer a peer; one whose queue is full (it does not read) or that is gone is dropped
        from its groups, its events redelivered or counted lost."""
        try:
            router.send_multipart([member, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            if member in self.table.members:
                if exc.errno == zmq.EAGAIN:
                    log.warning("a group member does not read (its queue is full): dropped")
                self._drop(router, sub, member)

    def _answer_stats(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes], now: float) -> None:
        """Answer the askers whose last answer is STATS_EVERY old: a peer that asks without
        reading gets ten answers a second at most, not one per request."""
        due = [a for a in self._asking if now - self._answered.get(a, -STATS_EVERY) >= STATS_EVERY]
        if not due:
            return
        text = json.dumps(self.stats()).encode()
        for asker in due:
            self._asking.discard(asker)
            self._answered[asker] = now
            self._reply(router, sub, asker, [b"S", text])

    def _ping(self, router: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
        for member in list(self.table.members):
            try:
                router.send_multipart([member, b"P"], zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self._drop(router, sub, member)
                elif exc.errno != zmq.EAGAIN:
                    raise

    def _drop(
        self,
        router: zmq.Socket[bytes],
        sub: zmq.Socket[bytes],
        member: bytes,
        *,
        failed: bool = True,
    ) -> None:
        self._send(router, sub, self._drop_quietly(sub, member, failed=failed))

    def _drop_quietly(
        self,
        sub: zmq.Socket[bytes],
        member: bytes,
        *,
        failed: bool = True,
        unsent: bytes | None = None,
    ) -> list[Delivery]:
        """Take `member` out (`failed`: not by its goodbye; `unsent`: the event whose send
        failed: see `GroupTable.drop`); returns what its going lets out of the queues."""
        before = {key: (g.lost, g.redelivered, g.dead) for key, g in self.table.groups.items()}
        for prefix in self.table.drop(member, failed=failed, unsent=unsent):
            self._subscribe(sub, prefix, -1)
        for key, group in self.table.groups.items():
            lost, redelivered, dead = before.get(key, (0, 0, 0))
            if group.lost > lost or group.redelivered > redelivered or group.dead > dead:
                log.warning(
                    "group %s (%s): a member left with %d event(s) unacknowledged: %d lost,"
                    " %d redelivered, %d dead",
                    group.name.decode(),
                    group.pattern.decode(),
                    group.lost - lost + group.redelivered - redelivered + group.dead - dead,
                    group.lost - lost,
                    group.redelivered - redelivered,
                    group.dead - dead,
                )
        return self.table.pump_all()

    def _subscribe(self, sub: zmq.Socket[bytes], prefix: bytes, change: int) -> None:
        count = self._prefixes.get(prefix, 0) + change
        if count > 0:
            self._prefixes[prefix] = count
        else:
            self._prefixes.pop(prefix, None)
        if change > 0 and count == 1:
            sub.setsockopt(zmq.SUBSCRIBE, prefix)
        elif change < 0 and count == 0:
            sub.setsockopt(zmq.UNSUBSCRIBE, prefix)

    def _report(self) -> None:
        if self._on_stats is None or not (self.table.groups or self.bad_frames or self.refused):
            return
        stats = self.stats()
        text = json.dumps(stats, sort_keys=True)
        if text != self._reported:
            self._reported = text
            self._on_stats(stats)

    def _bad(self, why: str) -> None:
        self.bad_frames += 1
        if self.bad_frames == 1 or self.bad_frames % 1000 == 0:
            log.warning(
                "dropped a bad message on the groups socket (%d so far): %s", self.bad_frames, why
            )


def _read_bounded(sock: zmq.Socket[bytes]) -> list[bytes] | None:
    """One message of at most MAX_FRAMES + 1 frames (the rest is read and dropped, not kept as
    Python objects); None when nothing is waiting. libzmq has buffered the whole message by then:
    a million-frame message costs its memory, once, in libzmq (see the module's docstring)."""
    try:
        first = sock.recv(zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return None
    frames = [first.bytes]
    more = first.more
    while more:
        frame = sock.recv(copy=False)
        more = frame.more
        if len(frames) <= MAX_FRAMES:
            frames.append(frame.bytes)
    return frames
