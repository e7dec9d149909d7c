"""Signals, forks and exit in real module processes under a real supervisor: a signal the
module handles itself, a `multiprocessing` worker it terminates, asyncio taking the signal
wake-up fd (none of them may stop the module; `restart` must still stop it gracefully), a
callback that forks and returns in the child, the module's atexit handlers, and a module with a
`multiprocessing` pool (stopped gracefully: the SIGTERM goes to the module process alone).

One project serves the whole file (each test uses its own module and trigger).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from project import Project, alive, projects

HANDLER = """
import logging
import multiprocessing
import os
import signal
import time
from typing import Any
from module_sdk import Event, EventBus

log = logging.getLogger("handler")
_bus: Any = None


def on_usr1(signum: int, frame: object) -> None:
    log.info("handled SIGUSR1")


def on_usr1_asked(event: Event) -> None:
    os.kill(os.getpid(), signal.SIGUSR1)


def on_ping(event: Event) -> None:
    _bus.publish("handler.pong", {"token": event.data, "pid": os.getpid()})


def on_terminate(event: Event) -> None:
    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))
    worker.start()
    worker.terminate()
    worker.join(20)
    _bus.publish("handler.terminated", {"token": event.data, "exitcode": worker.exitcode})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus
    _bus = event_bus
    signal.signal(signal.SIGUSR1, on_usr1)
    event_bus.subscribe("handler.usr1", on_usr1_asked)
    event_bus.subscribe("handler.ping", on_ping)
    event_bus.subscribe("handler.terminate", on_terminate)


def shutdown() -> None:
    pass
"""

ASYNCIO = """
import asyncio
import logging
import signal
import threading
from typing import Any
from module_sdk import EventBus

log = logging.getLogger("aiosig")
_loop = asyncio.new_event_loop()


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    _loop.add_signal_handler(signal.SIGUSR2, lambda: None)  # takes the wake-up fd
    threading.Thread(target=_loop.run_forever, daemon=True).start()


def shutdown() -> None:
    log.info("aiosig shutdown ran")
    _loop.call_soon_threadsafe(_loop.stop)
"""

FORKER = """
import os
from typing import Any
from module_sdk import Event, EventBus

_bus: Any = None


def on_fork(event: Event) -> None:
    child = os.fork()  # once per event, and the tests send one
    if child:
        _bus.publish("forker.child", {"token": event.data, "pid": child})
    # The child returns too, as a careless daemonising helper does.


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus
    _bus = event_bus
    event_bus.subscribe("forker.fork", on_fork)


def shutdown() -> None:
    pass
"""

POOL = """
import logging
import multiprocessing
from typing import Any
from module_sdk import EventBus

log = logging.getLogger("pool")
_pool: Any = None


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _pool
    _pool = multiprocessing.get_context("fork").Pool(2)
    _pool.map(abs, range(4))


def shutdown() -> None:
    _pool.terminate()
    log.info("pool terminated")
"""

LEAVER = """
import subprocess
import sys
from typing import Any
from module_sdk import EventBus

CHILD = (
    "import signal, sys, time\\n"
    "def term(signum, frame):\\n"
    "    open(sys.argv[1], 'w').write('SIGTERM')\\n"
    "    sys.exit(0)\\n"
    "signal.signal(signal.SIGTERM, term)\\n"
    "print('child ready', flush=True)\\n"
    "time.sleep(60)\\n"
)


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    subprocess.Popen([sys.executable, "-c", CHILD, config["marker"]])  # never stopped by us


def shutdown() -> None:
    pass
"""

EXITER = """
import atexit
import logging
import threading
from typing import Any
from module_sdk import EventBus

log = logging.getLogger("exiter")


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    atexit.register(threading.Event().wait)  # registered first, runs last: forever
    atexit.register(log.info, "exiter atexit ran")


def shutdown() -> None:
    log.info("exiter shutdown ran")
"""


@pytest.fixture(scope="module")
def running() -> Iterator[Project]:
    for project in projects():
        recorder = {
            "name": "recorder",
            "path": project.probe("recorder"),
            "config": {"record": str(project.record_file), "patterns": ["handler.*", "forker.*"]},
        }
        project.configure(
            [
                recorder,
                {"name": "handler", "path": project.write_module("handler.py", HANDLER)},
                {"name": "aiosig", "path": project.write_module("aiosig.py", ASYNCIO)},
                {"name": "forker", "path": project.write_module("forker.py", FORKER)},
                {
                    "name": "pool",
                    "path": project.write_module("pool.py", POOL),
                    "stop_timeout": 30,  # a hang shows as its SIGKILL, not as a slow test
                },
                {
                    "name": "leaver",
                    "path": project.write_module("leaver.py", LEAVER),
                    "config": {"marker": str(project.root / "leaver-child-stopped")},
                },
                {
                    "name": "exiter",
                    "path": project.write_module("exiter.py", EXITER),
                    "stop_timeout": 20,  # well past the shim's bound on atexit handlers
                },
            ]
        )
        project.up()
        yield project


def _ask(project: Project, event_type: str, reply: str) -> dict[str, Any]:
    """Publish `event_type` with a fresh token; the data of the `reply` event carrying it."""
    token, name = uuid.uuid4().hex, event_type.partition(".")[0]
    project.cli("publish", event_type, f'"{token}"', check=0)

    def replied() -> dict[str, Any] | None:
        found = [
            r["data"]
            for r in project.recorded()
            if r["type"] == reply and r["data"].get("token") == token
        ]
        return found[0] if found else None

    return wait_until(
        replied, 20, f"{reply} for {token}", lambda: f"{project.status()}\n{project.log(name)}"
    )


def test_a_signal_the_module_handles_runs_its_handler_and_stops_nothing(
    running: Project,
) -> None:
    pid = running.module("handler")["pid"]
    running.cli("publish", "handler.usr1", check=0)
    wait_until(lambda: "handled SIGUSR1" in running.log("handler"), 15, "the handler's line")
    # Before the fix the shim took the signal for a stop: shutdown(), exit 0, never restarted.
    assert _ask(running, "handler.ping", "handler.pong")["pid"] == pid
    row = running.module("handler")
    assert (row["state"], row["pid"], row["restarts"]) == ("running", pid, 0), row


def test_a_terminated_multiprocessing_worker_ends_and_the_module_runs_on(
    running: Project,
) -> None:
    pid = running.module("handler")["pid"]
    # The worker gets SIGTERM's default action, not the shim's handler and wake-up pipe.
    assert _ask(running, "handler.terminate", "handler.terminated")["exitcode"] == -15
    assert _ask(running, "handler.ping", "handler.pong")["pid"] == pid
    assert running.module("handler")["state"] == "running"


def test_a_module_that_took_the_wakeup_fd_still_stops_gracefully(running: Project) -> None:
    running.cli("restart", "aiosig", check=0)
    # Before the fix SIGTERM went unnoticed: SIGKILL at stop_timeout, and no shutdown().
    log = running.log("aiosig")
    assert "aiosig shutdown ran" in log, log
    assert "replaced the signal wake-up fd" in log, log  # said on its first heartbeat
    last = running.module("aiosig")["last_exit"]
    assert last["signal"] is None and last["code"] == 0, last


def test_a_callback_that_forks_and_returns_in_the_child_ends_that_child(
    running: Project,
) -> None:
    child = _ask(running, "forker.fork", "forker.child")["pid"]
    # Before the fix the child went on running the receiver loop on copies of the sockets,
    # spinning unseen until the module stopped.
    wait_until(lambda: not alive(child), 15, f"forked child {child} to end")
    said = "callback on_fork for forker.fork called os.fork() and returned in the child"
    # (its line reaches the log through the supervisor, which may write it a moment later)
    wait_until(lambda: said in running.log("forker"), 15, "the child's line in the log")
    row = running.module("forker")
    assert (row["state"], row["restarts"]) == ("running", 0), row


def test_the_modules_atexit_handlers_run_at_its_stop_within_a_bound(running: Project) -> None:
    running.cli("restart", "exiter", check=0)
    log = running.log("exiter")
    # Before the fix the module process ended with os._exit and ran none of them.
    assert log.index("exiter shutdown ran") < log.index("exiter atexit ran"), log
    assert "atexit handlers had not returned after 2s" in log, log  # the one that hangs
    last = running.module("exiter")["last_exit"]
    assert last["signal"] is None and last["code"] == 0, last


def test_a_module_with_a_multiprocessing_pool_stops_gracefully(running: Project) -> None:
    running.cli("restart", "pool", check=0)
    # Before the fix its whole process group got the SIGTERM: the pool's workers died at once,
    # one of them holding the pool's queue lock, and shutdown()'s terminate() waited on it
    # until the SIGKILL at stop_timeout.
    last = running.module("pool")["last_exit"]
    assert last["signal"] is None and last["code"] == 0, last
    assert "pool terminated" in running.log("pool")


def test_what_a_module_left_running_gets_sigterm_when_it_stops(running: Project) -> None:
    wait_until(lambda: "child ready" in running.log("leaver"), 15, "the module's child")
    marker = running.root / "leaver-child-stopped"
    running.cli("restart", "leaver", check=0)
    # The supervisor's SIGTERM goes to the module process alone now: its shim passes it on to
    # what the module left (then kills what is still there), so that it can end gracefully.
    wait_until(marker.exists, 15, "the child's SIGTERM handler to run")
    assert marker.read_text() == "SIGTERM"
