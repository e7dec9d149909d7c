"""A webhook that never answers must not hold the supervisor's loop: replacing or closing the
notifier lets its deliveries end in the background, and a crash meanwhile is restarted at once.
One that answers with a huge body, or a compression bomb, must not fill the supervisor's memory,
and one that trickles its reply in fails the attempt, as a timeout does."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import msgpack
import pytest
import zmq
from helpers import wait_until
from project import Project

from orchestrator.config.model import ErrorHandlingSection, NotificationsSection, Webhook
from orchestrator.config.redact import Redactor
from orchestrator.notify import WebhookNotifier, delivery
from orchestrator.rundir import RunDir


class Silent:
    """A TCP endpoint on 127.0.0.1 that accepts connections, reads what it gets, and never
    answers; it notes when each client gives up and closes (unix time)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self.received: dict[socket.socket, bytes] = {}
        self.closed_at: list[float] = []
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping:
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    conn, _ = sock.accept()
                    self._selector.register(conn, selectors.EVENT_READ)
                    with self._lock:
                        self.received[conn] = b""
                    continue
                data = sock.recv(65536)
                with self._lock:
                    if data:
                        self.received[sock] += data
                    else:
                        self.closed_at.append(time.time())
                        self._selector.unregister(sock)
                        sock.close()

    def requests(self) -> int:
        with self._lock:
            return sum(1 for data in self.received.values() if data.startswith(b"POST"))

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(5)
        for sock in [*self.received, self._listener]:
            sock.close()
        self._selector.close()


@pytest.fixture
def silent() -> Iterator[Silent]:
    server = Silent()
    yield server
    server.stop()


@pytest.mark.timeout(60)
def test_a_crash_during_a_reload_that_replaces_a_stuck_webhook_restarts_at_once(
    project: Project, silent: Silent
) -> None:
    modules = [{"name": "idle", "path": project.probe("idle")}]
    errors = {"retry_max_attempts": 1, "retry_wait_min": 0.01, "retry_wait_max": 0.05}
    project.configure(
        modules,
        notifications={"webhooks": [{"url": silent.url, "events": ["module.*"]}]},
        error_handling=errors,
    )
    pid = project.up()["modules"][0]["pid"]
    wait_until(silent.requests, 10, "module.loaded posted to the silent webhook")
    project.configure(modules, notifications={"webhooks": []}, error_handling=errors)

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(RunDir(project.config_dir, project.run_base).control)
        dealer.send(msgpack.packb({"cmd": "reload"}))  # it replaces the stuck notifier...
        os.kill(pid, signal.SIGKILL)  # ...while the module crashes
        assert dealer.poll(10_000, zmq.POLLIN), "no reply to reload"
        assert msgpack.unpackb(dealer.recv())["ok"] is True
    finally:
        dealer.close()
        context.term()

    row = project.wait_module("idle", state="running", restarts=1)
    assert row["pid"] != pid
    # The old notifier gives up on the silent webhook in the background, within its bound; the
    # module was running again before that (its ready message was not left waiting meanwhile).
    closed = wait_until(lambda: list(silent.closed_at), 10, "the old notifier's connection closed")
    app_log = (project.root / "logs" / "app.log").read_text()
    running = logged_at(app_log, f"idle running (pid {row['pid']},")
    assert running < closed[0], f"running at {running}, webhook closed at {closed}\n{app_log}"
    assert "left behind" not in app_log, app_log


def logged_at(app_log: str, text: str) -> float:
    """The unix time of the first app.log line containing `text` (to the millisecond)."""
    line = next(line for line in app_log.splitlines() if text in line)
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp()


GIB = 1 << 30
MIB = 1 << 20


def gzip_zeros(size: int) -> Iterator[bytes]:
    """A gzip stream that inflates to `size` zero bytes (a multiple of 1 MiB), about 1/1000 of
    that: after a full flush the compressor starts afresh, so each further MiB compresses the
    same."""
    block = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()[:-8]  # its trailer counts 2 MiB: ours counts them all
    crc = 0
    for _ in range(size // MIB):
        crc = zlib.crc32(block, crc)
    yield first
    for _ in range(size // MIB - 1):
        yield again
    yield end + struct.pack("<II", crc, size & 0xFFFFFFFF)


class OneConnection:
    """An HTTP endpoint on 127.0.0.1 that serves one connection, on a thread, as `_answer`
    says; `stop` closes it."""

    def __init__(self) -> None:
        self.done = threading.Event()  # the answer ended: all sent, or the client closed
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed by stop()
            conn, _ = self._listener.accept()
            with conn:
                self._answer(conn)
        self.done.set()

    def _answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._listener.close()
        self._thread.join(10)


class Flood(OneConnection):
    """Reads a POST, holds it until `release` is set, then answers 200 with a huge body: 1 GiB
    of zeros, or with `gzip` about 1 MiB that inflates to 1 GiB. It counts the body bytes it got
    out before the client closed the connection."""

    def __init__(self, *, gzip: bool) -> None:
        self.gzip = gzip
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.sent = 0
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while length and len(body) < int(length.group(1)):  # all of it: closing drops nothing
            body += conn.recv(65536)
        self.arrived.set()
        if not self.release.wait(30):
            return
        if self.gzip:
            reply = gzip_zeros(GIB)
            fields = b"Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
        else:
            reply = (bytes(MIB) for _ in range(GIB // MIB))
            fields = f"Content-Length: {GIB}\r\n".encode()
        with contextlib.suppress(OSError):  # the client closed: what it took is counted
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n")
            for chunk in reply:
                conn.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.gzip else chunk)
                self.sent += len(chunk)
            if self.gzip:
                conn.sendall(b"0\r\n\r\n")

    def stop(self) -> None:
        self.release.set()
        super().stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_a_huge_reply_is_not_taken_into_the_supervisors_memory(
    project: Project, gzip: bool
) -> None:
    flood = Flood(gzip=gzip)
    try:
        modules = [{"name": "idle", "path": project.probe("idle")}]
        hook = {"url": flood.url, "events": ["module.loaded"]}
        project.configure(modules, notifications={"webhooks": [hook]})
        pid = project.up()["supervisor"]["pid"]
        assert flood.arrived.wait(15), "module.loaded was not posted"
        before = peak_rss(pid)
        flood.release.set()

        def delivered() -> int:
            (stats,) = project.status()["webhooks"].values()
            return int(stats["delivered"])

        wait_until(delivered, 60, "the 200 counted as delivered")
        assert flood.done.wait(60), "the reply never ended"
        grown = peak_rss(pid) - before
        assert grown < 100 * MIB, f"the supervisor's peak RSS grew by {grown / MIB:.0f} MiB"
        if not gzip:
            assert flood.sent < 64 * MIB, f"{flood.sent / MIB:.0f} MiB of the reply were read"
    finally:
        flood.stop()


def peak_rss(pid: int) -> int:
    """Process `pid`'s peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


class Trickle(OneConnection):
    """Reads a POST, sends the start of a 200 and then one byte of a header every 0.1 s, for
    ever: no read ever waits long, the reply never ends. It notes when the client gives up and
    closes (`closed`)."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self._stopping = threading.Event()
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        with contextlib.suppress(OSError):
            while not self._stopping.wait(0.1):
                conn.sendall(b"z")  # fails once the client has closed
            return
        self.closed.set()

    def stop(self) -> None:
        self._stopping.set()
        super().stop()


@pytest.mark.timeout(60)
def test_a_reply_that_trickles_in_is_a_failed_attempt(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(delivery, "ATTEMPT_TIMEOUT", 0.5)
    trickle = Trickle()
    errors = ErrorHandlingSection(retry_max_attempts=1)
    hooks = NotificationsSection(webhooks=(Webhook(url=trickle.url),))
    notifier = WebhookNotifier(hooks, errors, Redactor([]), "shop")
    try:
        notifier.notify("module.error", {"name": "worker"}, [])
        wait_until(lambda: notifier.stats()[trickle.url]["failed"], 10, "a failed delivery")
        assert trickle.closed.wait(5), "the connection was left open"
        assert "delivery failing (timeout" in caplog.text, caplog.text
    finally:
        notifier.close(timeout=1.0)
        trickle.stop()
