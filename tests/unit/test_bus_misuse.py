"""The event bus used where it cannot work says so at the call: from a fork of the module process
(a `multiprocessing` worker: what it published was lost without a word), re-entered from a
signal handler on the thread inside publish() (it deadlocked), after close() (a callback that
outlived shutdown() still published)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import wait_until

from broker import Broker
from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[ZmqEventBus]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    # No broker: connecting is asynchronous, and an event with no subscriber is dropped.
    bus = ZmqEventBus(context, "forker", f"ipc://{tmp_path}/x.sock", f"ipc://{tmp_path}/y.sock")
    try:
        yield bus
    finally:
        bus.close()
        context.destroy(linger=0)


def test_the_bus_refuses_a_forked_child_and_names_its_process(bus: ZmqEventBus) -> None:
    owner = os.getpid()
    said = f"belongs to the module process (pid {owner})"
    child = os.fork()  # one child, which ends below whatever happens
    if child == 0:
        code = 0
        try:
            for call in (
                lambda: bus.publish("forker.event", {"n": 1}),
                lambda: bus.subscribe("forker.*", print),
                lambda: bus.unsubscribe("forker.*", print),
                bus.clear,
            ):
                try:
                    call()
                except RuntimeError as exc:
                    code += 1 if said in str(exc) else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 4  # each call refused, with the pid
    bus.publish("forker.event", {"n": 2})  # the module process itself: as before
    assert bus.events_out == 1


@pytest.mark.timeout(20)  # before the fix: a deadlock
def test_publish_reentered_on_its_own_thread_is_refused_not_a_deadlock(bus: ZmqEventBus) -> None:
    pack = bus._pack
    seen: list[BaseException] = []

    def pack_interrupted(*args: Any) -> bytes:
        # Where a signal handler that publishes would run: inside publish(), holding its lock.
        try:
            bus.publish("handler.event")
        except RuntimeError as exc:
            seen.append(exc)
        return pack(*args)

    bus._pack = pack_interrupted  # type: ignore[method-assign]
    bus.publish("outer.event")
    assert len(seen) == 1 and "inside publish() already" in str(seen[0]), seen
    bus._pack = pack  # type: ignore[method-assign]
    bus.publish("outer.event")  # and the lock is free again
    assert bus.events_out == 2


@pytest.fixture
def broker() -> Iterator[tuple[zmq.Context[zmq.Socket[bytes]], str, str]]:
    directory = tempfile.mkdtemp(dir="/tmp")  # ipc paths must stay short
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub, xpub = f"ipc://{directory}/xsub.sock", f"ipc://{directory}/xpub.sock"
    running = Broker(context, xsub, xpub)
    running.start()
    try:
        yield context, xsub, xpub
    finally:
        running.stop()
        running.join(5.0)
        context.destroy(linger=0)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_callback_that_outlives_close_cannot_publish(
    broker: tuple[zmq.Context[zmq.Socket[bytes]], str, str],
) -> None:
    context, xsub, xpub = broker
    inside, release = threading.Event(), threading.Event()
    outcome: list[str] = []

    def slow(event: Event) -> None:
        inside.set()
        release.wait(30)
        try:
            bus.publish("late.event")
            outcome.append("published")
        except RuntimeError as exc:
            outcome.append(str(exc))

    bus = ZmqEventBus(context, "slow", xsub, xpub)
    bus.subscribe("slow.go", slow)
    bus.handshake(5.0)
    bus.start()
    bus.publish("slow.go")
    wait_until(inside.is_set, 10, "the callback to start")
    assert not bus.close(timeout=0.05)  # the callback holds the receiver
    release.set()
    wait_until(lambda: outcome, 10, "the callback's publish")
    assert outcome == ["the event bus is closed (the module is shutting down)"]
    assert bus.close()
