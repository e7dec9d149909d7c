"""A NATS connection closed for good ends the bridge, saying why, to be restarted: nats-py closes
its client on most errors a server sends (`-ERR`), and never reconnects it."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
import zmq

from orchestrator.cluster.bridge import Bridge
from orchestrator.cluster.settings import BridgeSettings
from orchestrator.helper_process import HelperProcess

INFO = b'INFO {"server_id":"fake","version":"2.10.0","proto":1,"max_payload":1048576,"headers":true}\r\n'
TIMEOUT = 20.0  # seconds a step may take at most on a loaded machine (each ends sooner)


class FakeServer:
    """Speaks enough of the NATS protocol for a client to connect, subscribe and flush; sends
    `-ERR` lines when told (as nats-server does for a control line over its limit)."""

    def __init__(self) -> None:
        self.subscribed = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(INFO)
        await writer.drain()
        while line := await reader.readline():
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
                await writer.drain()
            elif line.startswith(b"SUB "):
                self.subscribed.set()
        writer.close()

    async def error(self, text: str) -> None:
        for writer in self._writers:
            writer.write(f"-ERR '{text}'\r\n".encode())
            await writer.drain()


async def connect_then(error: str | None) -> tuple[Bridge, bool, FakeServer]:
    """A bridge connected to a fake server, which then sends `error` (or the bridge stops):
    the bridge, whether it ended by itself, and the server."""
    fake = FakeServer()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = BridgeSettings(
        xsub="inproc://x",
        xpub="inproc://y",
        servers=(f"nats://127.0.0.1:{port}",),
        name="prod",
        host="alpha",
        export=("*",),
    )
    bridge = Bridge(settings)
    ended = asyncio.Event()
    bridge._end = ended.set
    task = asyncio.create_task(bridge._connect())
    try:
        async with asyncio.timeout(TIMEOUT):
            await task
            await fake.subscribed.wait()
        if error is not None:
            await fake.error(error)
            async with asyncio.timeout(TIMEOUT):
                await ended.wait()
        else:
            bridge._closing = True  # as `run` does at its stop
            assert bridge._nc is not None
            await bridge._nc.close()
    finally:
        server.close()
    return bridge, ended.is_set(), fake


def test_an_error_the_server_closes_the_connection_for_ends_the_bridge_with_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One frame whose topic made a control line over the server's limit closed the client:
    status said `nats disconnected: closed` for good, no restart, every later event unsent."""
    bridge, ended, _ = asyncio.run(connect_then("maximum control line exceeded"))
    assert ended and bridge.closed_for == "maximum control line exceeded"
    out = capsys.readouterr().out.splitlines()
    assert "nats: disconnected: closed (maximum control line exceeded)" in out, out


def test_a_bridge_that_stops_closes_its_connection_and_nothing_more() -> None:
    bridge, ended, _ = asyncio.run(connect_then(None))
    assert not ended and bridge.closed_for is None


def test_the_reason_a_helper_gives_before_it_exits_is_the_reason_of_its_exit() -> None:
    """The supervisor shows why the bridge restarted: `last exit exit 1 (NATS closed ...)`."""
    handlers: dict[int, Any] = {}
    read_end, write_end = os.pipe()  # a lifeline that stays open
    helper = HelperProcess(
        name="bridge",
        module="unused",
        args=[],
        memory_limit_mb=None,
        lifeline=read_end,
        poller=zmq.Poller(),
        watch_exit=lambda pid, handler: handler and handlers.__setitem__(pid, handler),
    )
    helper.argv = [
        sys.executable,
        "-c",
        "print('ready', flush=True)\n"
        "print('error: NATS closed the connection: maximum control line exceeded')\n"
        "raise SystemExit(1)\n",
    ]
    try:
        helper.start()
        helper.wait_ready(TIMEOUT)
        pid = helper.pid
        assert pid is not None
        _, raw = os.waitpid(pid, 0)  # the loop's reaper, in the supervisor
        handlers[pid](raw)
    finally:
        helper.stop(0.0)
        os.close(read_end)
        os.close(write_end)
    assert helper.last_exit is not None
    assert helper.last_exit["description"] == "exit 1"
    assert helper.last_exit["reason"] == "NATS closed the connection: maximum control line exceeded"
