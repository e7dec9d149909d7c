"""A webhook that never answers must not hold the supervisor's loop: replacing or closing the
notifier lets its deliveries end in the background, and a crash meanwhile is restarted at once."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import msgpack
import pytest
import zmq
from helpers import wait_until
from project import Project

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
