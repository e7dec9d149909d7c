"""A fork of the module process (a `multiprocessing` worker given the event bus) may not use the
bus: its sockets and threads stayed in the module process, and what it published was lost
without a word. It gets a RuntimeError naming the process the bus belongs to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from module_sdk.bus import ZmqEventBus


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
