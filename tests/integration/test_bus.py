"""The SDK event bus and the broker in one process, over real ipc sockets."""

from __future__ import annotations

import logging
import random
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import zmq
from helpers import Recorder, wait_until

from broker import Broker
from module_sdk.bus import HandshakeTimeoutError, ZmqEventBus
from module_sdk.codec import MAX_SOURCE, encode_envelope
from module_sdk.event import Event

Subscriptions = Sequence[tuple[str, Callable[[Event], object]]]


class Net:
    """A broker and the buses connected to it; `bus()` subscribes, handshakes and starts one."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], directory: Path) -> None:
        self.ctx = ctx
        self.xsub = f"ipc://{directory}/xsub.sock"
        self.xpub = f"ipc://{directory}/xpub.sock"
        self.broker = Broker(ctx, self.xsub, self.xpub)
        self.buses: list[ZmqEventBus] = []

    def bus(self, source: str, subscriptions: Subscriptions = ()) -> ZmqEventBus:
        bus = ZmqEventBus(self.ctx, source, self.xsub, self.xpub)
        self.buses.append(bus)
        for pattern, callback in subscriptions:
            bus.subscribe(pattern, callback)
        bus.handshake(5.0)
        bus.start()
        return bus

    def raw_publisher(self) -> zmq.Socket[bytes]:
        """A plain PUB socket on the broker, as a non-SDK client would have (closed with the
        context at teardown)."""
        raw = self.ctx.socket(zmq.PUB)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(self.xsub)
        return raw


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    directory, own = tmp_path, False
    if len(str(tmp_path)) > 80:  # ipc paths must stay short
        directory, own = Path(tempfile.mkdtemp(dir="/tmp")), True
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    net = Net(ctx, directory)
    net.broker.start()
    try:
        yield net
    finally:
        stuck = [bus for bus in net.buses if not bus.close()]
        net.broker.stop()
        net.broker.join(5.0)
        ctx.destroy(linger=0)
        if own:
            shutil.rmtree(directory, ignore_errors=True)
    assert not stuck, "a bus receiver did not stop"


def wait_for(recorder: Recorder, event_type: str) -> None:
    wait_until(
        lambda: recorder.got(event_type),
        what=f"{event_type} delivered",
        details=lambda: str(recorder.types),
    )


def publish_until(bus: ZmqEventBus, event_type: str, recorder: Recorder) -> None:
    """Publish `event_type` until `recorder` has it: for subscriptions still propagating."""

    def delivered() -> bool:
        bus.publish(event_type)
        return recorder.got(event_type)

    wait_until(delivered, what=f"{event_type} delivered", details=lambda: str(recorder.types))


def test_exact_subscription_delivers_the_event(net: Net) -> None:
    got = Recorder()
    b = net.bus("b", [("test.ping", got)])
    a = net.bus("a")
    before = time.time()
    a.publish("test.ping", {"n": 1, "items": [1, "x", None], "raw": b"\x00\xff"})
    a.publish("test.ping", None)
    wait_until(lambda: len(got.events) == 2, what="two events", details=lambda: str(got.events))
    after = time.time()
    first, second = got.events
    assert first.type == "test.ping"
    assert first.data == {"n": 1, "items": [1, "x", None], "raw": b"\x00\xff"}
    assert first.source == "a"
    assert isinstance(first.id, str) and first.id
    assert first.id != second.id
    assert before <= first.time <= second.time <= after
    assert second.data is None
    assert (a.events_out, a.events_in, b.events_out, b.events_in) == (2, 0, 0, 2)
    assert a.counters() == {
        "events_in": 0,
        "events_out": 2,
        "callback_errors": 0,
        "bad_frames": 0,
        "dropped": 0,
    }


def test_prefix_and_wildcard_patterns(net: Net) -> None:
    prefix, everything = Recorder(), Recorder()
    b = net.bus("b", [("test.*", prefix), ("*", everything)])
    a = net.bus("a")
    sent = ["test.ping", "test.a.b", "testing.x", "other.y", "done.now"]
    for event_type in sent:
        a.publish(event_type)
    wait_for(everything, "done.now")
    assert prefix.types == ["test.ping", "test.a.b"]
    assert everything.types == sent
    assert b.events_in == len(sent)


def test_exact_subscription_does_not_get_longer_types(net: Net) -> None:
    ping, sentinel = Recorder(), Recorder()
    b = net.bus("b", [("test.ping", ping), ("test.sentinel", sentinel)])
    a = net.bus("a")
    a.publish("test.pingpong")
    a.publish("test.ping.sub")
    a.publish("test.ping")
    a.publish("test.sentinel")
    wait_for(sentinel, "test.sentinel")
    assert ping.types == ["test.ping"]
    assert b.events_in == 2


def test_unsubscribe_stops_delivery(net: Net) -> None:
    ping, sentinel = Recorder(), Recorder()
    b = net.bus("b", [("test.ping", ping), ("test.sentinel", sentinel)])
    a = net.bus("a")
    a.publish("test.ping", 1)
    wait_for(ping, "test.ping")
    b.unsubscribe("test.ping", ping)
    b.unsubscribe("test.ping", ping)  # a second time is harmless
    a.publish("test.ping", 2)
    a.publish("test.sentinel")
    wait_for(sentinel, "test.sentinel")
    assert [event.data for event in ping.events] == [1]


def test_clear_removes_every_subscription(net: Net) -> None:
    exact, prefix, late = Recorder(), Recorder(), Recorder()
    b = net.bus("b", [("test.ping", exact), ("test.*", prefix)])
    a = net.bus("a")
    a.publish("test.ping", 1)
    wait_until(lambda: exact.events and prefix.events, what="test.ping delivered twice")
    b.clear()
    a.publish("test.ping", 2)
    b.subscribe("late.sentinel", late)
    publish_until(a, "late.sentinel", late)
    assert [event.data for event in exact.events] == [1]
    assert [event.data for event in prefix.events] == [1]


def test_a_raising_callback_logs_a_forged_source_cut_and_on_one_line(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    """Any process on the bus can name any source: one with line breaks went whole into the
    module's log (forged lines; a longer one than MAX_SOURCE is a bad frame now)."""

    def boom(event: Event) -> None:
        raise RuntimeError("boom")

    b = net.bus("b", [("test.ping", boom)])
    a = net.bus("forged\nERROR not ours " + "x" * (MAX_SOURCE - 22))
    with caplog.at_level(logging.ERROR, logger="module_sdk"):
        a.publish("test.ping")
        (message,) = wait_until(
            lambda: [r.getMessage() for r in caplog.records if "raised" in r.getMessage()],
            what="the callback's error logged",
        )
    assert "\n" not in message and len(message) < 400, message[:500]
    assert f"{MAX_SOURCE} characters" in message, message
    assert b.callback_errors == 1


def test_a_raising_callback_is_counted_and_others_still_run(net: Net) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError(f"boom on {event.type}")

    got = Recorder()
    b = net.bus("b", [("test.ping", boom), ("test.ping", got)])
    a = net.bus("a")
    a.publish("test.ping")
    wait_for(got, "test.ping")
    wait_until(
        lambda: b.callback_errors == 1,
        what="callback_errors == 1",
        details=lambda: str(b.counters()),
    )
    a.publish("test.ping")
    wait_until(lambda: len(got.events) == 2, what="second delivery")
    assert b.counters() == {
        "events_in": 2,
        "events_out": 0,
        "callback_errors": 2,
        "bad_frames": 0,
        "dropped": 0,
    }


def test_invalid_publish_raises_and_is_not_counted(net: Net) -> None:
    a = net.bus("a")
    for bad_type in ("ping", "test.", "Test ping", 3):
        with pytest.raises(ValueError):
            a.publish(bad_type)  # type: ignore[arg-type]
    for bad_data in (object(), {1, 2}, {"nested": [object()]}):
        with pytest.raises(TypeError):
            a.publish("test.ping", bad_data)
    assert a.events_out == 0
    a.publish("test.ping")
    assert a.events_out == 1


def test_subscribe_from_another_thread_after_start(net: Net) -> None:
    b = net.bus("b")
    a = net.bus("a")
    got = Recorder()
    errors: list[BaseException] = []

    def subscribe() -> None:
        try:
            b.subscribe("test.late", got)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=subscribe)
    thread.start()
    thread.join(5.0)
    assert not thread.is_alive()
    assert errors == []
    publish_until(a, "test.late", got)
    assert got.events[0].source == "a"


def test_bad_frames_are_counted_and_dropped(net: Net) -> None:
    everything = Recorder()
    b = net.bus("b", [("*", everything)])
    raw = net.raw_publisher()

    def send(event_type: str) -> None:
        raw.send_multipart([event_type.encode(), encode_envelope("raw", "r-1", time.time(), None)])

    def connected() -> bool:  # until the raw socket knows b's subscription
        send("raw.hello")
        return everything.got("raw.hello")

    wait_until(connected, what="raw publisher connected")
    garbage = random.Random(0).randbytes(32)
    raw.send(garbage)  # (a) one frame
    raw.send_multipart([b"test.ping", b"\xc1garbage"])  # (b) not msgpack
    raw.send_multipart([b"test.ping", encode_envelope("raw", "r-2", 1.0, None), b"x"])  # (c)
    raw.send_multipart([b"\xff\xfe", encode_envelope("raw", "r-3", 1.0, None)])  # (d) not UTF-8
    wait_until(lambda: b.bad_frames >= 4, what="4 bad frames", details=lambda: str(b.counters()))
    send("raw.after")
    wait_for(everything, "raw.after")
    assert b.bad_frames == 4
    assert "test.ping" not in everything.types
    assert b.callback_errors == 0
    a = net.bus("a")
    a.publish("test.after", {"ok": True})
    wait_for(everything, "test.after")
    assert everything.events[-1].data == {"ok": True}
    assert everything.events[-1].source == "a"


def test_gaps_in_a_publishers_sequence_are_counted_as_dropped(net: Net) -> None:
    pings = Recorder()
    b = net.bus("b", [("test.*", pings)])
    raw = net.raw_publisher()

    def send(topic: str, event_id: str, seq: int) -> None:
        raw.send_multipart([topic.encode(), encode_envelope("raw", event_id, 1.0, None, seq)])

    wait_until(  # until the raw socket knows b's subscription (unnumbered, so no baseline)
        lambda: send("test.hello", "x-0", 0) or pings.got("test.hello"), what="connected"
    )
    for seq in (1, 2, 5, 6):  # 3 and 4 "lost on the way"
        send("test.ping", "p1-1", seq)
    send("test.pong", "p1-2", 7)  # another topic: its own numbering, no gap
    send("test.ping", "p2-1", 1)  # another publisher: its own numbering, no gap
    send("test.ping", "p1-3", 7)  # the two interleaved, each in sequence: no gap
    send("test.ping", "p2-2", 2)
    send("test.ping", "p1-4", 9)  # 8 lost
    send("test.ping", "p1-x-1", 1)  # the prefix "p1-x-": a publisher of its own, no gap
    send("test.ping", "solo1", 3)  # ids without a "-" name no publisher: never a gap
    send("test.ping", "solo2", 7)
    wait_until(
        lambda: pings.types.count("test.ping") == 11 and "test.pong" in pings.types,
        what="11 pings and a pong",
        details=lambda: str(pings.types),
    )
    assert b.dropped == 3 and b.counters()["dropped"] == 3


def test_a_fast_publisher_and_a_slow_subscriber_show_drops_not_silence(net: Net) -> None:
    released = threading.Event()
    total = 250_000  # more than the broker's high-water mark (100,000) can hold for one subscriber

    def slow(event: Event) -> None:
        released.wait(10.0)  # hold the receiver until the publisher is done

    b = net.bus("b", [("flood.*", slow)])
    a = net.bus("a")
    for n in range(total):
        a.publish("flood.data", n)
    released.set()
    # A gap shows when a later event of the same topic arrives: keep sending one until it does.
    wait_until(
        lambda: a.publish("flood.data", -1) or b.dropped > 0,
        30,
        "the drops counted",
        lambda: str(b.counters()),
    )
    assert b.events_in + b.dropped >= total  # every event delivered, or counted as lost


def test_publishing_one_large_event_does_not_keep_its_memory(net: Net) -> None:
    got = Recorder()
    b = net.bus("b", [("big.*", got)])
    a = net.bus("a")
    large = "x" * (8 << 20)
    tracemalloc.start()
    try:
        a.publish("big.one", large)
        del large
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 1 << 20, f"{held} bytes still held after publishing"  # not the 8 MB buffer
    a.publish("big.two", {"small": True})
    wait_for(got, "big.two")
    assert got.events[-1].data == {"small": True} and b.bad_frames == 0


def test_a_handshake_proves_the_subscriptions_made_before_it_and_no_later_ones(net: Net) -> None:
    got = Recorder()
    bus = ZmqEventBus(net.ctx, "late", net.xsub, net.xpub)
    net.buses.append(bus)
    assert not bus.proven()  # never shaken hands
    bus.handshake(5.0)
    assert bus.proven()  # nothing changed since: the shim's second handshake is skipped
    bus.subscribe("test.late", got)
    assert not bus.proven()  # a subscription the broker may not have yet
    bus.handshake(5.0)
    assert bus.proven()
    bus.subscribe("test.late", Recorder())  # the same prefix again: nothing sent to the broker
    assert bus.proven()
    bus.start()
    net.bus("sender").publish("test.late")  # proven: the first event gets there
    wait_for(got, "test.late")


def test_a_bus_left_unproven_proves_itself_before_its_first_event(net: Net) -> None:
    # The shim leaves a module's first handshake to its first publish: that event must not be
    # dropped by its own publisher, which has no subscription of the running modules yet.
    got = Recorder()
    net.bus("listener", [("test.first", got)])
    for attempt in range(20):  # each a new publisher, as fresh as a module's
        bus = ZmqEventBus(net.ctx, f"fresh-{attempt}", net.xsub, net.xpub)
        net.buses.append(bus)
        bus.prove_before_publishing(5.0)
        assert not bus.proven()
        bus.publish("test.first", {"attempt": attempt})
        assert bus.proven()
        bus.publish("test.first", {"attempt": attempt, "second": True})
    wait_until(lambda: len(got.events) == 40, 10, "every first event")


def test_a_first_publish_that_cannot_prove_the_bus_fails_once_and_for_every_thread() -> None:
    # No broker: a worker thread's first publish fails, and so, at once and with the same
    # error, does every later publish and the shim's own proof after initialize().
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    directory = tempfile.mkdtemp(dir="/tmp")  # short: an ipc path
    nowhere = f"ipc://{directory}/none"
    bus = ZmqEventBus(ctx, "alone", nowhere + "-xsub", nowhere + "-xpub")
    try:
        bus.prove_before_publishing(0.2)
        failures: list[BaseException] = []

        def worker() -> None:
            try:
                bus.publish("test.first")
            except HandshakeTimeoutError as exc:
                failures.append(exc)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(30)
        assert failures and bus.proof_failed is failures[0]
        with pytest.raises(HandshakeTimeoutError) as again:
            bus.publish("test.second")
        assert again.value is bus.proof_failed  # not a second wait
        with pytest.raises(HandshakeTimeoutError) as shim:
            bus.prove(5.0)  # what the shim calls once initialize() has returned
        assert shim.value is bus.proof_failed
    finally:
        bus.close()
        ctx.destroy(linger=0)
        shutil.rmtree(directory, ignore_errors=True)


def test_subscriptions_made_faster_than_the_broker_reads_them_are_all_kept() -> None:
    """A SUB socket sends its subscriptions through a queue with a high-water mark, and past it
    libzmq dropped them without a word: a module subscribing to thousands of topics while the
    broker was slow (or restarting) never got some of them, and a probe subscribed behind a
    churning thread's queue never came back (the module crashed at start)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    directory = tempfile.mkdtemp(dir="/tmp")  # short: an ipc path
    xsub, xpub = f"ipc://{directory}/xsub.sock", f"ipc://{directory}/xpub.sock"
    listener = ZmqEventBus(ctx, "listener", xsub, xpub)
    broker = Broker(ctx, xsub, xpub)
    buses = [listener]
    try:
        got = Recorder()
        topics = [f"test.many.t{number}" for number in range(3000)]
        for topic in topics:  # no broker yet: every one of them waits in the queue
            listener.subscribe(topic, got)
        broker.start()
        listener.handshake(10.0)
        listener.start()
        sender = ZmqEventBus(ctx, "sender", xsub, xpub)
        buses.append(sender)
        sender.handshake(10.0)
        for topic in topics:
            sender.publish(topic)
        wait_until(lambda: len(got.events) == len(topics), 10, "an event on each topic")
    finally:
        for bus in buses:
            bus.close()
        broker.stop()
        broker.join(5.0)
        ctx.destroy(linger=0)
        shutil.rmtree(directory, ignore_errors=True)


def test_publishing_on_a_closed_bus_never_proven_says_it_is_closed(net: Net) -> None:
    bus = ZmqEventBus(net.ctx, "closing", net.xsub, net.xpub)
    bus.prove_before_publishing(5.0)
    bus.close()
    with pytest.raises(RuntimeError, match="closed"):
        bus.publish("test.late")


def test_subscription_churn_while_a_callback_is_busy_never_deadlocks(net: Net) -> None:
    # Each (un)subscribe queued a command for the busy receiver under the subscriptions' lock;
    # past the queue's high-water mark the send blocked holding the lock, and the receiver,
    # done with its callback, waited for that lock to route its next event: deaf for good.
    after = Recorder()
    churned = threading.Event()

    def noop(event: Event) -> None:
        pass

    def churn() -> None:
        for _ in range(1500):
            b.subscribe("test.churn", noop)
            b.unsubscribe("test.churn", noop)
        churned.set()

    def slow(event: Event) -> None:
        threading.Thread(target=churn, daemon=True).start()
        assert churned.wait(10), "the churn blocked while this callback was busy"

    b = net.bus("b", [("test.slow", slow), ("test.after", after)])
    a = net.bus("a")
    a.publish("test.slow")
    wait_until(churned.is_set, 15, "the churn done")
    publish_until(a, "test.after", after)
    assert b.counters()["callback_errors"] == 0


def test_sys_exit_in_a_callback_is_counted_and_the_bus_goes_on(net: Net) -> None:
    # SystemExit ended the receiver's thread: the module went deaf, silently, until its
    # heartbeat timeout took it for hung.
    after = Recorder()

    def leave(event: Event) -> None:
        sys.exit(3)

    b = net.bus("b", [("test.leave", leave), ("test.after", after)])
    a = net.bus("a")
    a.publish("test.leave")
    wait_until(lambda: b.counters()["callback_errors"] == 1, 10, "the SystemExit counted")
    publish_until(a, "test.after", after)


def test_an_event_type_that_is_not_a_string_is_a_value_error(net: Net) -> None:
    a = net.bus("a")
    for wrong in (["a.b"], {"a": 1}, 5, None):
        with pytest.raises(ValueError, match="string"):
            a.publish(wrong)  # type: ignore[arg-type]


def test_redeliver_is_a_bool_not_anything_truthy(net: Net) -> None:
    b = net.bus("b")
    with pytest.raises(TypeError, match="redeliver: expected True or False"):
        b.subscribe("test.x", Recorder(), group="g", redeliver="no")  # type: ignore[arg-type]
