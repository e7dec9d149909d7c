"""An answer to a control request that cannot be encoded is a failure answer, never an error on
the supervisor's loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from orchestrator import control
from orchestrator.control_port import Replies


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    router.bind("inproc://replies")
    dealer.setsockopt(zmq.ROUTING_ID, b"cli")
    dealer.connect("inproc://replies")
    dealer.send(b"hello")  # the router learns the client's identity
    assert router.poll(5000)
    router.recv_multipart()
    yield router, dealer
    context.destroy(linger=0)


def test_an_answer_too_large_for_msgpack_is_answered_as_a_failure(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    router, dealer = pair
    Replies(router).send(b"cli", control.reply({"limit": 10**30}))  # msgpack: out of range
    assert dealer.poll(5000)
    answer = control.decode(dealer.recv())
    assert answer["ok"] is False and "could not be encoded" in answer["error"]


def test_a_flood_of_huge_child_messages_is_refused_at_its_header_and_paced(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """A module sent 16 MiB heartbeats of a 15-million-item list as fast as it could: each cost
    the loop a third of a second to decode, status stopped answering and the supervisor grew to
    10 GB. msgpack's limits refuse one at its header; a turn reads a bounded number of bytes."""
    import msgpack

    from orchestrator.metrics.module_metrics import CHANNEL_LIMITS

    router, dealer = pair
    bomb = msgpack.packb({"kind": "heartbeat", "pid": 1, "junk": [0] * 2_000_000})
    for _ in range(6):
        dealer.send(bomb)
    dealer.send(msgpack.packb({"kind": "heartbeat", "pid": 1}))
    handled: list[dict[str, object]] = []
    inbox = control.Inbox(
        router, "child message", None, limits=CHANNEL_LIMITS, turn_bytes=len(bomb) * 2
    )
    assert router.poll(5000)
    inbox.drain(lambda identity, message: handled.append(message))
    assert handled == [] and inbox.malformed.count == 1  # two read (the first logged), then paced
    for _ in range(4):
        inbox.drain(lambda identity, message: handled.append(message))
    assert handled == [{"kind": "heartbeat", "pid": 1}]
    assert inbox.malformed.count == 5


def test_nesting_cannot_multiply_the_per_container_bounds(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """4000 lists of 4096 items each stay under every per-container bound: 16 million items,
    a quarter of a second of the loop, twice a turn. Items are counted in all."""
    import msgpack

    from orchestrator.metrics.module_metrics import CHANNEL_LIMITS

    bomb = msgpack.packb({"kind": "heartbeat", "junk": [[0] * 4096] * 4000})
    with pytest.raises(ValueError, match="items in all"):
        control.decode(bomb, CHANNEL_LIMITS)
    # A heartbeat of a module at the SDK's bounds is well within them.
    metrics = [
        {
            "name": f"m{i}",
            "kind": "histogram",
            "help": "h" * 300,
            "labels": [f"l{k}" for k in range(8)],
            "buckets": list(range(30)),
            "series": [[["v" * 200] * 8, [1] * 31, 1.0] for _ in range(10)],
        }
        for i in range(100)
    ]
    message = {"kind": "heartbeat", "pid": 1, "counters": {}, "busy_for": 0.0, "metrics": metrics}
    assert control.decode(msgpack.packb(message), CHANNEL_LIMITS)["metrics"] == metrics


def test_an_error_report_with_a_huge_traceback_still_reaches_the_supervisor() -> None:
    """The supervisor refuses a string of more than 1 MiB: the SDK sends the start of the
    message and the end of the traceback."""
    import msgpack

    from module_sdk.channel import SupervisorChannel
    from orchestrator.metrics.module_metrics import CHANNEL_LIMITS

    sent: list[bytes] = []
    channel = SupervisorChannel.__new__(SupervisorChannel)
    channel.pid = 1
    channel.socket = type("S", (), {"send": lambda self, data, flags=0: sent.append(data)})()  # type: ignore[assignment]
    channel.error("initialize", "boom " * 500_000, "frame\n" * 400_000 + "the end")
    report = control.decode(sent[0], CHANNEL_LIMITS)
    assert report["error"].startswith("boom") and report["traceback"].endswith("the end")
    assert msgpack.packb(report) == sent[0]


def test_requests_that_wait_on_one_waiter_get_one_answer_built_once(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """4000 pipelined `wait_started` built 4000 status replies in the turn their module settled
    (18 s of the loop): a waiter the requests share is asked once a turn."""
    from orchestrator.control_port import MAX_WAITING_EACH

    router, dealer = pair
    replies = Replies(router)
    asked: list[int] = []
    settled = False

    def all_settled() -> dict[str, object] | None:
        asked.append(1)
        return control.reply({"modules": []}) if settled else None

    for n in range(200):
        replies.wait_for(b"gone-%d" % n, all_settled)
    replies.wait_for(b"cli", all_settled)
    replies.serve()
    assert len(asked) == 1 and not dealer.poll(0)
    settled = True
    replies.serve()
    assert len(asked) == 2
    assert dealer.poll(5000) and control.decode(dealer.recv()) == control.reply({"modules": []})
    for _ in range(MAX_WAITING_EACH):  # answered: the client may wait again
        replies.wait_for(b"cli", lambda: None)
    assert not dealer.poll(0)


def test_past_its_share_of_waiting_requests_a_client_is_refused_at_once(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waiters were never capped, and those of clients that left were kept."""
    from orchestrator import control_port

    router, dealer = pair
    monkeypatch.setattr(control_port, "MAX_WAITING", 10)

    def refusal() -> str:
        assert dealer.poll(5000)
        answer = control.decode(dealer.recv())
        assert answer["ok"] is False, answer
        return str(answer["error"])

    replies = Replies(router)
    for _ in range(control_port.MAX_WAITING_EACH):
        replies.wait_for(b"cli", lambda: None)
    assert not dealer.poll(0)
    replies.wait_for(b"cli", lambda: None)
    assert "of this client's requests already wait" in refusal()

    replies = Replies(router)
    for n in range(10):  # clients that left, say
        replies.wait_for(b"gone-%d" % n, lambda: None)
    replies.serve()  # still waiting: still counted
    replies.wait_for(b"cli", lambda: None)
    assert "10 requests already wait" in refusal()


def test_a_turn_spends_a_bounded_time_on_control_requests(
    pair: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    """1500 pipelined `logs` requests (each reads up to 512 KB) gave 2 s turns for 18 s: a turn
    handles requests for TURN_SECONDS at most and leaves the rest queued for the next."""
    import time

    import msgpack

    router, dealer = pair
    for n in range(40):
        dealer.send(msgpack.packb({"cmd": "logs", "n": n}))
    handled: list[int] = []

    def handle(identity: bytes, message: dict[str, object]) -> None:
        handled.append(int(str(message["n"])))
        time.sleep(control.TURN_SECONDS / 4)  # a request that takes a while

    inbox = control.Inbox(router, "control request", None, turn_seconds=control.TURN_SECONDS)
    assert router.poll(5000)
    inbox.drain(handle)
    assert 0 < len(handled) < 40, handled
    turns = 1
    while len(handled) < 40 and router.poll(5000):
        inbox.drain(handle)
        turns += 1
    assert handled == list(range(40)) and turns > 1
