"""The bridge: carries events between this host's bus and NATS, in one asyncio thread.

A ZeroMQ SUB on the local XPUB takes the events that match `export`; each goes to NATS on
`<name>.ev.<type>` as its raw envelope, with this host in the `Orch-Origin` header and this
bridge run in `Orch-Instance` (sequence syncs go to `<name>.ev.<type>.~sync`). Events of one subject
that were already queued together leave as one message with an `Orch-Batch` header (see
`batch`). What other hosts publish under `<name>.` comes back in and is published on the local
XSUB unchanged (source, id, time and seq kept, so local subscribers count what NATS lost as
`dropped`). An event never goes back out: the bridge remembers what it imported (each event's
and sync's exact bytes, for a while: see `RecentImports`) and skips it when its SUB sees it come
back, and it drops NATS messages that carry its own instance (besides connecting with `no_echo`).
Publishers are not judged by what comes in: an event claiming a local module's id prefix keeps
none of its events home. Only the supervisor's prefix is known to be local, and NATS messages
claiming it are not imported; nor are `host.*` events of the supervisor, which never cross.

Built-in events (source `orchestrator`: `module.*`, `app.*`, `resources.usage`) leave with
`"host": <this host>` added to their data.

Connection state changes are printed as single lines on stdout, `nats: connected to URL` or
`nats: disconnected: <why>`; the supervisor shows the last one in `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import nats
import zmq
import zmq.asyncio
import zmq.backend
from nats.aio.client import Client
from nats.aio.msg import Msg

from module_sdk.codec import BadFrameError, decode_envelope, decode_sync, encode_envelope
from module_sdk.event import Pattern, shown
from module_sdk.protocol import SYNC_SUFFIX
from module_sdk.sequence import GapCounter
from orchestrator.cluster import batch
from orchestrator.cluster.bridge_lines import READY, say
from orchestrator.cluster.connection import NatsConnection
from orchestrator.cluster.counts import Counts
from orchestrator.cluster.hosts import Hosts
from orchestrator.cluster.local_bus import RecentImports, drain, publisher_prefix
from orchestrator.cluster.remote import RemoteControl
from orchestrator.cluster.routing import BUILT_IN_SOURCE, INVALID, Routing
from orchestrator.cluster.settings import BridgeSettings
from orchestrator.cluster.signing import Sealer, control_key
from orchestrator.cluster.subjects import pattern_subject
from orchestrator.cluster.supervisor_link import SupervisorLink

log = logging.getLogger(__name__)

ORIGIN = "Orch-Origin"
INSTANCE = "Orch-Instance"  # this bridge run's random id: two hosts may share a name
COUNTS_EVERY = 1.0  # seconds between `counts: ...` lines, when they change
BATCH = 256  # local events forwarded per wake-up at most, before others get a turn
PUBLISH_TIMEOUT = 2.0  # seconds one publish may take in all, past which it is counted unsent
LOCAL_QUEUE = 10_000  # events queued from the local bus while NATS is slow; past it, counted
CANCEL_WAIT = 0.2  # seconds the tasks have to end once cancelled, at stop
# pyzmq's Socket.send is a Python layer over its backend's send, and its flags are enums whose
# arithmetic runs in Python: per event, both cost more than the send (as in module_sdk.bus).
_send_frame = zmq.backend.Socket.send
_SNDMORE = int(zmq.SNDMORE)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A task of the bridge that ended by a bug: said, so it is not silent (it stays ended)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("bridge: %s failed", task.get_name(), exc_info=task.exception())


class Bridge(NatsConnection):
    """Forwards between the local bus and NATS until `stop` is set."""

    def __init__(self, settings: BridgeSettings) -> None:
        super().__init__()
        self.settings = settings
        self._routing = Routing(settings.name, [Pattern.parse(text) for text in settings.export])
        self._imports = RecentImports()  # imported events, until the local bus brings them back
        # The supervisor's publisher: a NATS message claiming it is a forgery, or a copy.
        self._local_prefix = settings.local_prefix or None
        self._instance = os.urandom(8).hex()
        self._headers = {ORIGIN: settings.host, INSTANCE: self._instance}
        self._local_gaps = GapCounter()  # events the local queue dropped before we saw them
        self._nc: Client | None = None
        self._pub: zmq.Socket[bytes] | None = None  # a PUB never blocks: plain sends
        self.counts = Counts()
        self.hosts: Hosts | None = None
        self.farewell = False  # say goodbye at stop (not when the supervisor died: then "lost")
        self.remote: RemoteControl | None = None

    # -- the local bus ------------------------------------------------------------------------

    def _socket(self, context: zmq.asyncio.Context, kind: int) -> zmq.asyncio.Socket:
        sock = context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 200)
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_size)
        curve = self.settings.curve
        if curve:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve["server_key"].encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve["public_key"].encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve["secret_key"].encode())
        return sock

    async def run(self, stop: asyncio.Event) -> None:
        """Connect to the local bus, say `ready`, connect to NATS (for as long as it takes) and
        forward both ways until `stop` is set."""
        context = zmq.asyncio.Context()
        sub = self._socket(context, zmq.SUB)
        # A small queue: while NATS is slow, what overflows is counted (by sequence gaps), not
        # held in memory until the helper's memory limit kills the bridge.
        sub.setsockopt(zmq.RCVHWM, min(self.settings.high_water_mark, LOCAL_QUEUE))
        sub.setsockopt(zmq.SNDHWM, 0)  # our subscriptions: libzmq drops them past a mark
        for pattern in self._routing.patterns:
            sub.setsockopt(zmq.SUBSCRIBE, pattern.zmq_prefix)
        sub.connect(self.settings.xpub)
        pub = self._socket(context, zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, self.settings.high_water_mark)
        pub.setsockopt(zmq.RCVHWM, 0)  # forwarded subscriptions: read here, see `_report`
        pub.connect(self.settings.xsub)
        self._pub = zmq.Socket.shadow(pub.underlying)
        tasks = self._control_tasks(context)
        say(READY)
        tasks += [
            asyncio.create_task(self._connect(), name="nats"),
            asyncio.create_task(self._local(sub), name="local"),
            asyncio.create_task(self._report(), name="counts"),
        ]
        for task in tasks:
            task.add_done_callback(_log_failure)
        self._end = stop.set  # NATS closed the connection for good (see `connection`)
        try:
            await stop.wait()
        finally:
            self._closing = True
            for task in tasks:
                task.cancel()
            # Not gather: a cancelled pyzmq receive now and then never completes, and the
            # goodbye and the close below must not wait for it (the process ends anyway).
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
            if self.hosts is not None and self.farewell:
                await self.hosts.leave()
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
                    await asyncio.wait_for(self._nc.close(), 1.0)
            sub.close(0)
            pub.close(0)
            context.term()

    def _control_tasks(self, context: zmq.asyncio.Context) -> list[asyncio.Task[None]]:
        """With a supervisor to talk to: announce this host, hear the others, and carry control
        requests between the hosts' supervisors (see `hosts` and `remote`)."""
        settings = self.settings
        if not settings.control:
            return []
        link = SupervisorLink(context, settings.control, settings.link_key)
        try:
            key = control_key(settings.credentials)
        except OSError as exc:  # NATS refuses them too, and says so: control stays shut
            log.error("bridge: cannot read the credentials to sign control requests: %s", exc)
            key = os.urandom(32)
        sealer = Sealer(key, settings.host)
        self.hosts = Hosts(
            name=settings.name,
            host=settings.host,
            instance=self._instance,
            link=link,
            sealer=sealer,
            say=say,
        )
        self.remote = RemoteControl(
            name=settings.name,
            host=settings.host,
            link=link,
            hosts=self.hosts,
            sealer=sealer,
            instance=self._instance,
        )
        return [
            asyncio.create_task(self.hosts.run(), name="hosts"),
            asyncio.create_task(link.serve_forwards(self.remote.forward), name="forwards"),
        ]

    async def _local(self, sub: zmq.asyncio.Socket) -> None:
        # Wait through asyncio, then take what else is queued with plain non-blocking reads:
        # an awaited receive costs far more than the event it brings. What one wake-up brings
        # leaves together (see `send`), and then the loop lets the flusher write it.
        plain: zmq.Socket[bytes] = zmq.Socket.shadow(sub.underlying)
        while True:
            queued = [await sub.recv_multipart()]
            drain(plain, queued, BATCH)
            out: list[tuple[str, bytes]] = []
            for frames in queued:
                if len(frames) != 2:
                    continue  # not an event: a ZeroMQ peer of the bus sent something else
                try:
                    item = self.outgoing(frames[0], frames[1])
                except Exception:  # a bug here must not stop forwarding every other event
                    log.exception("bridge: exporting an event failed")
                    continue
                if item is not None:
                    out.append(item)
            if out:
                await self.send(out)
            await asyncio.sleep(0)  # a recv that finds a message queued never yields

    async def _report(self) -> None:
        """Say the counts every COUNTS_EVERY seconds while they change; and read the
        subscriptions the broker forwarded to our PUB (ZeroMQ reads them only when the socket
        is used: with nothing coming from NATS they queued at the broker without bound)."""
        while True:
            await asyncio.sleep(COUNTS_EVERY)
            if self._pub is not None:
                self._pub.getsockopt(zmq.EVENTS)
            self.counts.report()

    async def export(self, topic: bytes, body: bytes) -> None:
        """A frame seen on the local bus: send it to NATS if it matches `export` and was not
        imported from there."""
        item = self.outgoing(topic, body)
        if item is not None:
            await self.send([item])

    def outgoing(self, topic: bytes, body: bytes) -> tuple[str, bytes] | None:
        """`(subject, body)` that a frame seen on the local bus leaves as, or None if it stays
        (not exported, imported from NATS, not a valid frame). Counts what the local queue lost
        before it."""
        if self._nc is None:
            return None
        route = self._routing.route_of(topic)
        subject, built_in = route
        if not subject:
            if route is INVALID:
                self.counts.bad_local(f"its topic is no valid event type: {shown(topic)}")
            return None
        if self._imports.back(topic, body):
            return None  # imported: it never goes back out
        try:
            if built_in is None:  # a sync
                prefix = decode_sync(body)[0]
                if prefix == self._local_prefix and topic.startswith(b"host."):
                    return None  # of events that stay home: other hosts would count them lost
                return subject, body
            source, event_id, sent, data, seq = decode_envelope(body)
            if seq:
                self._count_local_losses(event_id, topic, seq, sent)
            if source == BUILT_IN_SOURCE and topic.startswith(b"host."):
                return None  # each host says what it sees of the others: never exported
            if built_in and source == BUILT_IN_SOURCE and isinstance(data, dict):
                data = {**data, "host": self.settings.host}
                body = encode_envelope(source, event_id, sent, data, seq)
        except (BadFrameError, TypeError):
            return None
        return subject, body

    async def send(self, items: list[tuple[str, bytes]]) -> None:
        """Publish `(subject, body)` items in order, consecutive ones of one subject as one
        message (see `batch`). What NATS will not take within PUBLISH_TIMEOUT is counted."""
        nc = self._nc
        if nc is None:
            return
        left = len(items)
        # A batch stays well under the server's limit on a message (an event alone may not).
        max_bytes = min(batch.BATCH_BYTES, nc.max_payload // 2)
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                for subject, bodies in batch.runs(items, max_bytes):
                    try:
                        if len(bodies) == 1:
                            await nc.publish(subject, bodies[0], headers=self._headers)
                        else:
                            headers = {**self._headers, batch.BATCH_HEADER: str(len(bodies))}
                            await nc.publish(subject, batch.pack(bodies), headers=headers)
                        self.counts.exported += len(bodies)
                    except (nats.errors.Error, OSError) as exc:
                        self.counts.lost(len(bodies), str(exc) or type(exc).__name__)
                    except Exception as exc:  # a bug (ours or nats-py's): said, and counted
                        log.exception("bridge: publishing to NATS failed")
                        self.counts.lost(len(bodies), type(exc).__name__)
                    left -= len(bodies)
        except TimeoutError as exc:
            self.counts.lost(left, str(exc) or "NATS took too long")

    def _count_local_losses(self, event_id: str, topic: bytes, seq: int, sent: float) -> None:
        before = self._local_gaps.dropped
        self._local_gaps.event(event_id, topic, seq, sent)
        if self._local_gaps.dropped > before:
            self.counts.lost(
                self._local_gaps.dropped - before, "the bridge's local queue overflowed"
            )

    async def _subscribe(self, nc: Client) -> None:
        # One subscription for events and syncs (one subject tree, see `subjects`): nats-py runs
        # each subscription's callback in a task of its own, so with two a sync could overtake
        # the event sent before it, which its subscribers would then count as dropped.
        await nc.subscribe(pattern_subject(self.settings.name, "*"), cb=self.receive)
        if self.hosts is not None and self.remote is not None:
            await self.remote.connected(nc)
            await self.hosts.connected(nc)

    async def receive(self, msg: Msg) -> None:
        """A message from NATS: publish its event (or batch of them) on the local bus, unless it
        is our own."""
        headers = msg.headers
        count = None
        if headers:
            if headers.get(INSTANCE) == self._instance:
                return  # our own (no_echo should have kept it from us)
            # (Another host calling itself as this one is told by signed announcements, see
            # peers.PeerTable.twins: any NATS client can write this message's headers.)
            count = headers.get(batch.BATCH_HEADER)
        pub = self._pub
        if pub is None:
            return
        topic = self._routing.topic_of(msg.subject)
        if not topic:
            self.counts.bad_from_nats(f"its subject names no event type: {shown(msg.subject)}")
            return
        try:
            bodies = [msg.data] if count is None else batch.unpack(msg.data, count)
        except BadFrameError as exc:
            self.counts.bad_from_nats(f"on {shown(msg.subject)}: {exc}")
            return
        sync = topic.endswith(SYNC_SUFFIX)
        host_event = not sync and topic.startswith(b"host.")
        local, imports = self._local_prefix, self._imports
        imports.tick(time.monotonic())
        awaited = bool(self._routing.route_of(topic)[0])  # the local SUB sees it come back
        send = _send_frame
        for body in bodies:
            try:
                if sync:
                    prefix = decode_sync(body)[0]
                else:
                    source, event_id = decode_envelope(body)[:2]
                    prefix = publisher_prefix(event_id)
                    if host_event and source == BUILT_IN_SOURCE:
                        self.counts.refuse(f"a built-in {topic.decode()} event")
                        continue  # no bridge exports them: a forgery
            except BadFrameError as exc:
                self.counts.bad_from_nats(f"on {shown(msg.subject)}: {exc}")
                continue
            if prefix == local:
                self.counts.refuse("an event of this host's supervisor")  # a copy, or a forgery
                continue
            if awaited:
                imports.add(topic, body)
            send(pub, topic, _SNDMORE)
            send(pub, body)
            self.counts.imported += 1
