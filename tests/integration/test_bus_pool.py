"""The SDK bus with `concurrency` > 1 (callbacks on a pool, module_sdk.dispatch) over a real
broker and ipc sockets: errors counted from several threads, busy_for seeing a stuck callback,
and close() with callbacks still running."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from helpers import Recorder, wait_until

from broker import Broker
from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event


class _Net:
    def __init__(self, directory: Path) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.xsub = f"ipc://{directory}/xsub.sock"
        self.xpub = f"ipc://{directory}/xpub.sock"
        self.broker = Broker(self.ctx, self.xsub, self.xpub)
        self.broker.start()
        self.buses: list[ZmqEventBus] = []

    def bus(self, source: str, concurrency: int = 1) -> ZmqEventBus:
        bus = ZmqEventBus(self.ctx, source, self.xsub, self.xpub, concurrency=concurrency)
        self.buses.append(bus)
        return bus

    def close(self) -> None:
        for bus in self.buses:
            bus.close(2.0)
        self.broker.stop()
        self.broker.join(5.0)
        self.ctx.destroy(linger=0)


@pytest.fixture
def net() -> Iterator[_Net]:
    directory = Path(tempfile.mkdtemp(prefix="pool-", dir="/tmp"))  # ipc paths stay short
    net = _Net(directory)
    try:
        yield net
    finally:
        net.close()
        shutil.rmtree(directory, ignore_errors=True)


def _connected(sender: ZmqEventBus, got: Recorder, event_type: str) -> None:
    """Publish `event_type` until `got` has it (the subscription may still be on its way)."""

    def delivered() -> bool:
        sender.publish(event_type)
        return got.got(event_type)

    wait_until(delivered, 10, f"{event_type} delivered")


def test_errors_on_several_callback_threads_are_all_counted(net: _Net) -> None:
    got = Recorder()

    def boom(event: Event) -> None:
        if event.type != "warm.up":
            raise RuntimeError(event.type)

    receiver = net.bus("receiver", concurrency=4)
    receiver.subscribe("*", boom)
    receiver.subscribe("warm.up", got)
    receiver.handshake(5.0)
    receiver.start()
    sender = net.bus("sender")
    sender.handshake(5.0)
    sender.start()
    _connected(sender, got, "warm.up")
    for n in range(200):
        sender.publish(f"err.t{n % 8}")
    wait_until(
        lambda: receiver.callback_errors == 200,
        15,
        "200 callback errors",
        lambda: str(receiver.counters()),
    )
    assert receiver.counters()["events_in"] >= 200 + 1


def test_busy_for_sees_a_stuck_callback_and_close_says_it_could_not_stop(net: _Net) -> None:
    got = Recorder()
    entered, release = threading.Event(), threading.Event()

    def stuck(event: Event) -> None:
        entered.set()
        release.wait(20)

    receiver = net.bus("receiver", concurrency=2)
    receiver.subscribe("warm.up", got)
    receiver.subscribe("stuck.now", stuck)
    receiver.handshake(5.0)
    receiver.start()
    sender = net.bus("sender")
    sender.handshake(5.0)
    sender.start()
    _connected(sender, got, "warm.up")
    sender.publish("stuck.now")
    assert entered.wait(10)
    # The other worker still serves other types while one is stuck: no head-of-line blocking.
    sender.publish("warm.up")
    wait_until(lambda: len(got.events) >= 2, 10, "another type served meanwhile")
    wait_until(lambda: receiver.busy_for() > 0.05, 10, "busy_for to grow")
    assert receiver.close(timeout=0.1) is False  # the stuck callback holds its worker
    release.set()
