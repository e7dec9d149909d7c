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
