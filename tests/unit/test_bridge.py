"""The bridge's forwarding rules without processes or servers: what leaves, what comes in, what
never goes back out."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import nats.errors
import pytest
import zmq
import zmq.asyncio

from module_sdk.codec import decode_envelope, encode_envelope, encode_sync
from orchestrator.cluster import batch, local_bus
from orchestrator.cluster import bridge as bridge_module
from orchestrator.cluster.batch import BATCH_HEADER
from orchestrator.cluster.bridge import BATCH, INSTANCE, ORIGIN, Bridge
from orchestrator.cluster.local_bus import publisher_prefix
from orchestrator.cluster.settings import BridgeSettings


class FakeNats:
    """Records each event it is given (a batch's one by one, in `sent`) and each message."""

    def __init__(self, max_payload: int = 1 << 20) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []
        self.max_payload = max_payload

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        self.messages.append((subject, payload, headers))
        count = headers.get(BATCH_HEADER)
        bodies = [payload] if count is None else batch.unpack(payload, count)
        alone = {key: value for key, value in headers.items() if key != BATCH_HEADER}
        self.sent += [(subject, body, alone) for body in bodies]


class FakePub:
    """Collects the frames the bridge sends (through the backend send it calls) as messages."""

    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []
        self._more = False

    def send(self, data: bytes, flags: int = 0) -> None:
        if self._more:
            self.sent[-1].append(data)
        else:
            self.sent.append([data])
        self._more = bool(flags & zmq.SNDMORE)


@pytest.fixture(autouse=True)
def _fake_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge sends through pyzmq's backend, which only takes a real socket."""
    monkeypatch.setattr(
        bridge_module, "_send_frame", lambda sock, data, flags=0: sock.send(data, flags)
    )


class Msg:
    def __init__(self, subject: str, data: bytes, origin: str, instance: str = "other") -> None:
        self.subject, self.data = subject, data
        self.headers = {ORIGIN: origin, INSTANCE: instance}


def bridge(
    export: tuple[str, ...] = ("*",), local_prefix: str = ""
) -> tuple[Bridge, FakeNats, FakePub]:
    settings = BridgeSettings(
        xsub="ipc:///x",
        xpub="ipc:///y",
        servers=("nats://h:1",),
        name="prod",
        host="alpha",
        export=export,
        local_prefix=local_prefix,
    )
    b = Bridge(BridgeSettings.from_json(settings.to_json()))  # as its process reads them
    nats, pub = FakeNats(), FakePub()
    b._nc, b._pub = nats, pub  # type: ignore[assignment]
    return b, nats, pub


def run(coroutine: Any) -> None:
    asyncio.run(coroutine)


def test_an_exported_event_leaves_as_it_is_with_its_origin() -> None:
    b, nats, _ = bridge(("orders.*",))
    body = encode_envelope("shop", "12-ab-1", 1.5, {"n": 1}, 1)
    run(b.export(b"orders.created", body))
    run(b.export(b"stock.low", encode_envelope("shop", "12-ab-2", 1.5, {}, 1)))
    run(b.export(b"\x00probe.x", body))
    assert nats.sent == [("prod.ev.orders.created", body, {ORIGIN: "alpha", INSTANCE: b._instance})]


def test_a_sync_leaves_on_its_own_subject() -> None:
    b, nats, _ = bridge()
    body = encode_sync("12-ab-", 7, 1.5)
    run(b.export(b"orders.created\x00", body))
    assert nats.sent == [
        ("prod.ev.orders.created.~sync", body, {ORIGIN: "alpha", INSTANCE: b._instance})
    ]


def test_built_in_events_leave_with_the_host_named() -> None:
    b, nats, _ = bridge()
    run(b.export(b"module.error", encode_envelope("orchestrator", "1-a-1", 1.0, {"name": "m"}, 1)))
    run(b.export(b"module.error", encode_envelope("someone", "1-b-1", 1.0, {"name": "m"}, 1)))
    assert [decode_envelope(body)[3] for _, body, _ in nats.sent] == [
        {"name": "m", "host": "alpha"},
        {"name": "m"},
    ]


def test_an_imported_event_is_published_locally_unchanged_and_never_exported_again() -> None:
    b, nats, pub = bridge()
    body = encode_envelope("shop", "99-zz-3", 2.0, {"n": 3}, 3)
    run(b.receive(Msg("prod.ev.orders.created", body, "beta")))  # type: ignore[arg-type]
    assert pub.sent == [[b"orders.created", body]]
    run(b.export(b"orders.created", body))  # the local SUB sees it come back
    sync = encode_sync("99-zz-", 3, 2.0)
    run(b.receive(Msg("prod.ev.orders.created.~sync", sync, "beta")))  # type: ignore[arg-type]
    assert pub.sent[-1] == [b"orders.created\x00", sync]
    run(b.export(b"orders.created\x00", sync))
    assert nats.sent == []


def test_messages_from_this_host_or_not_ours_are_dropped() -> None:
    b, _, pub = bridge()
    body = encode_envelope("shop", "1-a-1", 2.0, {}, 1)
    for msg in (
        Msg("prod.ev.orders.created", body, "alpha", b._instance),  # our own
        Msg("other.ev.orders.created", body, "beta"),  # another cluster's name
        Msg("prod.ev.orders", body, "beta"),  # not an event type
        Msg("prod.ev.orders.created", msgpack.packb([1, 2]), "beta"),  # not an envelope
    ):
        run(b.receive(msg))  # type: ignore[arg-type]
    assert pub.sent == []


def test_a_refusal_is_not_hidden_by_the_reset_that_follows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    b, _, _ = bridge()
    run(b._error(nats.errors.AuthorizationError()))
    run(b._error(ConnectionResetError(104, "Connection reset by peer")))
    run(b._disconnected())
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["nats: disconnected: authorization failed"], lines


def test_a_burst_on_the_local_bus_is_forwarded_whole() -> None:
    """Events are read in batches (one awaited receive, then plain ones): none may fall
    between two batches."""
    count = 2 * BATCH + 7
    b, nats, _ = bridge()

    async def burst() -> None:
        context = zmq.asyncio.Context()
        pub = context.socket(zmq.PUB)
        sub = context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        for sock in (pub, sub):
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
        pub.bind("inproc://burst")
        sub.connect("inproc://burst")
        await asyncio.sleep(0.05)  # the subscription reaches the PUB (inproc: at once)
        for index in range(count):
            body = encode_envelope("m", f"1-a-{index}", 1.0, None, index + 1)
            await pub.send_multipart([b"x.y", body])
        task = asyncio.create_task(b._local(sub))
        while len(nats.sent) < count:
            await asyncio.sleep(0.01)
        task.cancel()
        pub.close(0)
        sub.close(0)
        context.term()

    asyncio.run(asyncio.wait_for(burst(), 10))
    ids = [decode_envelope(body)[1] for _, body, _ in nats.sent]
    assert ids == [f"1-a-{index}" for index in range(count)]
    assert len(nats.messages) < count  # what was queued together left together


def test_events_of_a_host_of_the_same_name_come_in_and_a_header_alone_names_no_twin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Twins are told by signed announcements (peers.PeerTable.twins); the Orch-Origin header
    any NATS client can write made a bridge warn of a twin that was not there (a sweep)."""
    b, _, pub = bridge()
    for n in (1, 2):
        body = encode_envelope("shop", f"7-tw-{n}", 2.0, {}, n)
        run(b.receive(Msg("prod.ev.orders.created", body, "alpha")))  # type: ignore[arg-type]
    assert len(pub.sent) == 2  # its events are not taken for our own
    assert "calls itself" not in capsys.readouterr().out


def test_an_imported_publishers_own_events_still_leave() -> None:
    """What is not exported again is an imported event itself, not its publisher: a message
    from NATS claiming a local module's id prefix (a forgery, or a replay into a bridge just
    restarted, which knows no local publisher but the supervisor) keeps none of its events
    home."""
    b, nats, pub = bridge()
    forged = encode_envelope("x", "12-ab-99", 1.0, {}, 1)
    run(b.receive(Msg("prod.ev.orders.created", forged, "mallory")))  # type: ignore[arg-type]
    sync = encode_sync("12-ab-", 9, 1.0)
    run(b.receive(Msg("prod.ev.orders.created.~sync", sync, "mallory")))  # type: ignore[arg-type]
    assert len(pub.sent) == 2
    run(b.export(b"orders.created", forged))  # the local SUB sees them come back: they stay
    run(b.export(b"orders.created\x00", sync))
    assert nats.sent == []
    mine = encode_envelope("shop", "12-ab-2", 1.1, {}, 2)
    run(b.export(b"orders.created", mine))
    run(b.export(b"orders.created\x00", encode_sync("12-ab-", 2, 1.1)))
    assert [decode_envelope(body)[1] for _, body, _ in nats.sent[:1]] == ["12-ab-2"]
    assert len(nats.sent) == 2


def test_a_flood_of_publishers_from_nats_never_silences_a_host_nor_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NATS client without the cluster's credentials sends events of more distinct
    publishers than the bridge remembers imports: another host's real event, forgotten before
    the local bus brought it back, leaves at most once more, and that host's next events still
    come in (they were dropped for good, taken for this host's, and the flood echoed out)."""
    monkeypatch.setattr(local_bus, "RECENT", 50_000, raising=False)  # a bridge of this version
    b, nats, pub = bridge()
    real = encode_envelope("shop", "99-zz-1", 2.0, {}, 1)
    run(b.receive(Msg("prod.ev.orders.created", real, "beta")))  # type: ignore[arg-type]
    for first in range(0, 200_000, 1000):  # more than any version remembered
        bodies = [
            encode_envelope("e", f"{n:x}-q-1", 2.0, None, 0) for n in range(first, first + 1000)
        ]
        flood = Msg("prod.ev.zz.q", batch.pack(bodies), "mallory")
        flood.headers[BATCH_HEADER] = "1000"
        run(b.receive(flood))  # type: ignore[arg-type]
    run(b.export(b"orders.created", real))  # back on the local bus, long after
    assert len(nats.sent) <= 1
    later = encode_envelope("shop", "99-zz-2", 2.1, {}, 2)
    run(b.receive(Msg("prod.ev.orders.created", later, "beta")))  # type: ignore[arg-type]
    assert pub.sent[-1] == [b"orders.created", later]
    run(b.export(b"orders.created", later))
    assert len(nats.sent) <= 1


def test_a_message_claiming_a_local_publisher_does_not_silence_it() -> None:
    """A NATS message claiming a publisher seen in exported events (a forgery, from any client
    that watched the exports) does not stop that publisher's exports."""
    b, nats, _ = bridge()
    run(b.export(b"orders.created", encode_envelope("shop", "12-ab-1", 1.0, {}, 1)))
    forged = encode_envelope("x", "12-ab-99", 1.0, {}, 1)
    run(b.receive(Msg("prod.ev.zz.q", forged, "mallory")))  # type: ignore[arg-type]
    run(b.receive(Msg("prod.ev.zz.q.~sync", encode_sync("12-ab-", 9, 1.0), "mallory")))  # type: ignore[arg-type]
    run(b.export(b"orders.created", encode_envelope("shop", "12-ab-2", 1.1, {}, 2)))
    assert len(nats.sent) == 2


def test_host_events_stay_home_with_their_syncs_and_none_come_in() -> None:
    """`host.*` from the supervisor never cross: neither their syncs (the other hosts counted
    events they never were to get as dropped), nor one from NATS (a forgery: a NATS client
    without the cluster's credentials made hosts say another was lost)."""
    b, nats, pub = bridge(local_prefix="1-abcdef-sup-")
    run(b.export(b"host.joined", encode_envelope("orchestrator", "1-abcdef-sup-1", 1.0, {}, 1)))
    run(b.export(b"host.joined\x00", encode_sync("1-abcdef-sup-", 1, 1.0)))
    assert nats.sent == []
    run(b.export(b"host.mine\x00", encode_sync("5-mod-", 1, 1.0)))  # a module's: crosses
    run(b.export(b"module.x\x00", encode_sync("1-abcdef-sup-", 1, 1.0)))
    assert len(nats.sent) == 2
    lost = encode_envelope("orchestrator", "de-ad-1", 1.0, {"host": "beta"}, 1)
    run(b.receive(Msg("prod.ev.host.lost", lost, "mallory")))  # type: ignore[arg-type]
    assert pub.sent == [] and b.counts.refused == 1
    mine = encode_envelope("mod", "de-ad-1", 1.0, {}, 1)
    run(b.receive(Msg("prod.ev.host.mine", mine, "beta")))  # type: ignore[arg-type]
    assert pub.sent == [[b"host.mine", mine]]


def test_the_supervisors_prefix_is_local_from_the_bridges_start() -> None:
    """A bridge restarted (its process crashed) has exported nothing yet: a forged message
    naming the supervisor's prefix, seen on NATS before, must still not silence it."""
    b, nats, pub = bridge(local_prefix="1-abcdef-sup-")
    forged = encode_envelope("orchestrator", "1-abcdef-sup-7", 1.0, {}, 1)
    run(b.receive(Msg("prod.ev.module.x", forged, "mallory")))  # type: ignore[arg-type]
    assert pub.sent == []
    run(b.export(b"module.x", encode_envelope("orchestrator", "1-abcdef-sup-1", 1.0, {}, 1)))
    assert len(nats.sent) == 1


def test_two_supervisors_of_one_pid_publish_under_different_prefixes() -> None:
    """Supervisors run as pid 1 in containers: their event ids must still differ, or a bridge
    takes the other host's events' publisher for its own supervisor's."""
    from orchestrator.events import SystemEvents

    ids = set()
    for _ in range(2):
        context = zmq.Context()
        try:
            events = SystemEvents(context, "inproc://x")
            ids.add(publisher_prefix(events.send("app.test", {}, "orchestrator")))
            events.close()
        finally:
            context.destroy(linger=0)
    assert len(ids) == 2


def test_events_the_local_queue_dropped_are_counted_as_unsent() -> None:
    b, nats, _ = bridge()
    for seq in (1, 2, 6):  # 3, 4 and 5 overflowed the bridge's local queue
        run(b.export(b"orders.created", encode_envelope("shop", f"5-lo-{seq}", 1.0, {}, seq)))
    assert len(nats.sent) == 3 and b.counts.unsent == 3


def test_a_batch_from_nats_is_published_locally_event_by_event_in_order() -> None:
    b, nats, pub = bridge()
    bodies = [encode_envelope("shop", f"42-bt-{n}", 2.0, {"n": n}, n) for n in (1, 2, 3)]
    msg = Msg("prod.ev.orders.created", batch.pack(bodies), "beta")
    msg.headers[BATCH_HEADER] = "3"
    run(b.receive(msg))  # type: ignore[arg-type]
    assert pub.sent == [[b"orders.created", body] for body in bodies]
    assert b.counts.imported == 3
    run(b.export(b"orders.created", bodies[0]))  # imported: never goes back out
    assert nats.sent == []


def test_a_bad_batch_publishes_nothing_and_a_bad_envelope_in_one_only_itself() -> None:
    b, _, pub = bridge()
    good = encode_envelope("shop", "42-bt-1", 2.0, {}, 1)
    wrong_count = Msg("prod.ev.orders.created", batch.pack([good]), "beta")
    wrong_count.headers[BATCH_HEADER] = "2"
    one_bad = Msg("prod.ev.orders.created", batch.pack([b"\x01", good]), "beta")
    one_bad.headers[BATCH_HEADER] = "2"
    for msg in (wrong_count, one_bad):
        run(b.receive(msg))  # type: ignore[arg-type]
    assert pub.sent == [[b"orders.created", good]]


def test_events_queued_together_leave_in_one_message_per_run_of_a_subject() -> None:
    b, nats, _ = bridge()
    items = [
        ("prod.ev.x.a", encode_envelope("m", "1-a-1", 1.0, None, 1)),
        ("prod.ev.x.a", encode_envelope("m", "1-a-2", 1.0, None, 2)),
        ("prod.ev.x.b", encode_envelope("m", "1-a-3", 1.0, None, 1)),
    ]
    run(b.send(items))
    assert [(subject, len(headers)) for subject, _, headers in nats.messages] == [
        ("prod.ev.x.a", 3),  # origin, instance and the batch's count
        ("prod.ev.x.b", 2),
    ]
    assert nats.sent == [(subject, body, b._headers) for subject, body in items]
    assert b.counts.exported == 3 and b.counts.unsent == 0


class RefusingNats(FakeNats):
    """Refuses messages on one subject; hangs on another."""

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        if subject.endswith(".refused"):
            raise nats.errors.MaxPayloadError()
        if subject.endswith(".hung"):
            await asyncio.sleep(3600)
        await super().publish(subject, payload, headers)


def test_what_nats_refuses_or_takes_too_long_for_is_counted_unsent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge_module, "PUBLISH_TIMEOUT", 0.05)
    b, _, _ = bridge()
    refusing = RefusingNats()
    b._nc = refusing  # type: ignore[assignment]
    body = encode_envelope("m", "1-a-1", 1.0, None, 0)
    subjects = ["prod.ev.x.a", "prod.ev.x.refused", "prod.ev.x.refused", "prod.ev.x.b"]
    subjects += ["prod.ev.x.hung", "prod.ev.x.c", "prod.ev.x.c"]
    run(b.send([(subject, body) for subject in subjects]))
    assert [subject for subject, _, _ in refusing.sent] == ["prod.ev.x.a", "prod.ev.x.b"]
    # Two refused, the hung one and the two after it.
    assert b.counts.exported == 2 and b.counts.unsent == 5


class BrokenNats(FakeNats):
    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        raise AssertionError("Client.connect must be called first")  # as nats-py can


def test_an_unexpected_publish_error_is_counted_and_forwarding_goes_on() -> None:
    b, _, _ = bridge()
    b._nc = BrokenNats()  # type: ignore[assignment]
    body = encode_envelope("m", "1-a-1", 1.0, None, 0)
    run(b.send([("prod.ev.x.a", body), ("prod.ev.x.a", body), ("prod.ev.x.b", body)]))
    assert b.counts.unsent == 3 and b.counts.exported == 0


def test_syncs_queued_together_cross_as_a_batch_too() -> None:
    a, nats, _ = bridge()
    syncs = [encode_sync("12-ab-", 7, 1.5), encode_sync("13-cd-", 2, 1.5)]
    run(a.send([("prod.ev.orders.created.~sync", body) for body in syncs]))
    assert len(nats.messages) == 1
    b, exported, pub = bridge()
    subject, payload, headers = nats.messages[0]
    msg = Msg(subject, payload, "beta")
    msg.headers[BATCH_HEADER] = headers[BATCH_HEADER]
    run(b.receive(msg))  # type: ignore[arg-type]
    assert pub.sent == [[b"orders.created\x00", body] for body in syncs]
    run(b.export(b"orders.created\x00", syncs[1]))  # its publisher is remote: stays
    assert exported.sent == []


def test_a_batch_stays_under_the_servers_limit_on_a_message() -> None:
    b, _, _ = bridge()
    small = FakeNats(max_payload=1000)
    b._nc = small  # type: ignore[assignment]
    body = encode_envelope("m", "1-a-1", 1.0, "x" * 80, 0)
    run(b.send([("prod.ev.x.a", body)] * 20))
    assert len(small.sent) == 20
    assert all(len(payload) <= 500 for _, payload, _ in small.messages)


def test_a_failing_message_callback_is_logged_not_taken_for_the_connections_state(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py hands what a subscription callback raised to the error callback: that is a bug of
    ours, logged, and not `nats: disconnected: unhashable type: 'list'` in status."""
    b, _, _ = bridge()
    run(b._error(TypeError("unhashable type: 'list'")))
    run(b._error(ConnectionResetError(104, "Connection reset by peer")))
    run(b._disconnected())
    assert capsys.readouterr().out.splitlines() == [
        "nats: disconnected: [Errno 104] Connection reset by peer"
    ]
    assert "handling a NATS message failed" in caplog.text
