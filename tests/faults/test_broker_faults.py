"""The broker runs in a process of its own: what a peer can make libzmq do to it (crash on a
pathological subscription, run out of descriptors, grow) costs a broker restart, never the
supervisor or a module; modules reconnect by themselves and lost events are counted."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import psutil
import pytest
import zmq
from helpers import free_ports, wait_until
from project import FAST_SUPERVISION, Project, alive, describe

TICKER = """
import threading

stop = threading.Event()


def tick(event_bus):
    n = 0
    while not stop.wait(0.01):
        n += 1
        event_bus.publish("tick.n", n)


def initialize(event_bus, config):
    threading.Thread(target=tick, args=(event_bus,), daemon=True).start()


def shutdown():
    stop.set()
"""

LISTENER = """
def initialize(event_bus, config):
    event_bus.subscribe("tick.*", lambda event: None)


def shutdown():
    pass
"""


def _start(project: Project, **main: Any) -> dict[str, Any]:
    _configure(project, **main)
    return project.up()


def _configure(project: Project, **main: Any) -> None:
    project.configure(
        [
            {"name": "listener", "path": project.write_module("listener.py", LISTENER)},
            {
                "name": "ticker",
                "path": project.write_module("ticker.py", TICKER),
                "depends_on": ["listener"],
            },
        ],
        supervision=FAST_SUPERVISION,
        **main,
    )


def _pids(status: dict[str, Any]) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in status["modules"]}


def _receiving(project: Project, more_than: int = 0, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the listener has counted more than `more_than` ticks; its status row."""
    return wait_until(
        lambda: (row := project.module("listener"))["events_in"] > more_than and row,
        timeout,
        f"the listener receiving ticks (more than {more_than})",
        lambda: f"{project.status()['bus']}\n{project.log('listener')}",
    )


def test_a_crashed_broker_is_restarted_and_only_the_events_in_flight_are_lost(
    project: Project,
) -> None:
    status = _start(project)
    supervisor, modules, broker = status["supervisor"]["pid"], _pids(status), status["bus"]
    assert broker["broker_running"] and alive(broker["broker_pid"]), broker
    _receiving(project)
    # Stop the broker, let ticks queue up inside it, then crash it: those are lost for sure.
    os.kill(broker["broker_pid"], signal.SIGSTOP)
    sent = project.module("ticker")["events_out"]
    wait_until(lambda: project.module("ticker")["events_out"] >= sent + 5, 10, "ticks sent")
    os.kill(broker["broker_pid"], signal.SIGSEGV)
    os.kill(broker["broker_pid"], signal.SIGCONT)
    bus = wait_until(
        lambda: (
            (b := project.status()["bus"])["broker_running"] and b["broker_restarts"] == 1 and b
        ),
        10,
        "the broker restarted",
        lambda: str(project.status()["bus"]),
    )
    assert bus["broker_pid"] != broker["broker_pid"]
    assert "SIGSEGV" in bus["broker_last_exit"]["description"], bus
    before = project.module("listener")["events_in"]
    _receiving(project, before)  # the modules reconnected by themselves
    wait_until(
        lambda: (r := project.module("listener"))["dropped"] >= 5 and r,
        10,
        "the lost ticks counted as dropped",
        lambda: str(project.module("listener")),
    )
    after = project.status()
    assert after["supervisor"]["pid"] == supervisor
    assert _pids(after) == modules, after  # no module restarted
    assert all(m["restarts"] == 0 for m in after["modules"]), after
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "the broker (pid" in app_log and "SIGSEGV" in app_log, app_log


# A raw peer in a process of its own: libzmq's SUB socket keeps its own subscriptions in the same
# recursive trie, so the peer itself would crash as it closes; it leaves with os._exit instead.
HOSTILE_PEER = """
import os, sys, zmq
sub = zmq.Context().socket(zmq.SUB)
monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
sub.setsockopt(zmq.RECONNECT_IVL, 60_000)
sub.connect(sys.argv[1])
sub.setsockopt(zmq.SUBSCRIBE, b"a." + b"b" * int(sys.argv[2]))
sub.setsockopt(zmq.SUBSCRIBE, b"ok.")
print("disconnected" if monitor.poll(10_000) else "kept", flush=True)
os._exit(0)
"""


def _raw_peer_subscribes(endpoint: str, length: int) -> str:
    """What the hostile peer saw: `disconnected` if the broker dropped it."""
    result = subprocess.run(
        [sys.executable, "-c", HOSTILE_PEER, endpoint, str(length)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.stdout.strip() or result.stderr


@pytest.mark.parametrize("length", [200_000, 1_000_000])
def test_a_raw_peer_with_a_huge_subscription_is_disconnected(project: Project, length: int) -> None:
    status = _start(project)
    _receiving(project)
    assert _raw_peer_subscribes(status["bus"]["xpub"], length) == "disconnected"
    after = project.status()
    assert after["supervisor"]["pid"] == status["supervisor"]["pid"]
    assert after["bus"]["broker_pid"] == status["bus"]["broker_pid"], after["bus"]
    assert after["bus"]["broker_restarts"] == 0
    assert _pids(after) == _pids(status)
    _receiving(project, project.module("listener")["events_in"])


def _subscribe_many(endpoint: str, count: int) -> tuple[zmq.Context[zmq.Socket[bytes]], Any]:
    """A raw peer with `count` subscriptions, and one to the ticks last."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SNDHWM, 0)  # else the peer's own libzmq drops most of them
    sub.connect(endpoint)
    for n in range(count):
        sub.setsockopt(zmq.SUBSCRIBE, b"flood.%06d" % n)
    sub.setsockopt(zmq.SUBSCRIBE, b"tick.")
    return context, sub


def test_a_peer_with_100k_subscriptions_costs_the_supervisor_nothing(project: Project) -> None:
    status = _start(project, bus={"broker_memory_limit_mb": 4096})
    supervisor = psutil.Process(status["supervisor"]["pid"])
    rss_before = supervisor.memory_info().rss
    context, sub = _subscribe_many(status["bus"]["xpub"], 100_000)
    try:
        # Once its last subscription is through, the peer gets ticks: all were processed.
        assert sub.poll(30_000), "the broker never processed the peer's subscriptions"
        # A new module process gets every subscription as it connects; its handshake still
        # completes (none is dropped at a high-water mark on the way).
        project.cli("restart", "listener", timeout=60, check=0)
        assert supervisor.memory_info().rss - rss_before < 8 * 1024 * 1024
    finally:
        sub.close()
        context.term()
    assert project.status()["bus"]["broker_restarts"] == 0


def test_a_broker_over_its_memory_limit_is_restarted(project: Project) -> None:
    status = _start(project, bus={"broker_memory_limit_mb": 40})
    context, sub = _subscribe_many(status["bus"]["xpub"], 100_000)
    try:
        bus = wait_until(
            lambda: (b := project.status()["bus"])["broker_restarts"] >= 1 and b,
            30,
            "the broker restarted for its memory",
            lambda: str(project.status()["bus"]),
        )
    finally:
        sub.close()
        context.term()
    assert "broker_memory_limit_mb 40" in bus["broker_last_exit"]["reason"], bus
    after = project.status()
    assert after["supervisor"]["pid"] == status["supervisor"]["pid"]
    assert _pids(after) == _pids(status)
    _receiving(project, project.module("listener")["events_in"])


def test_running_out_of_descriptors_on_the_tcp_bus_spares_the_supervisor(
    project: Project,
) -> None:
    """Half-open connections past the open-file limit: the broker may stall or restart, but the
    supervisor answers, no module restarts, and the bus works again once they are gone."""
    ports = free_ports(2)
    _configure(
        project,
        bus={"transport": "tcp", "host": "127.0.0.1", "xsub_port": ports[0], "xpub_port": ports[1]},
    )
    limit = 256

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "up", "-d", "-c", str(project.config_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=project.env,
        cwd=project.root,
        preexec_fn=low_fd_limit,
        check=False,
    )
    assert result.returncode == 0, describe(result)
    status = project.status()
    _receiving(project)
    flood = []
    try:
        for _ in range(limit + 100):
            conn = socket.socket()
            conn.setblocking(False)
            conn.connect_ex(("127.0.0.1", ports[0]))
            flood.append(conn)
        for _ in range(3):  # the supervisor keeps answering while the broker is starved
            after = project.status()
            assert after["supervisor"]["pid"] == status["supervisor"]["pid"]
    finally:
        for conn in flood:
            conn.close()
    assert _pids(project.status()) == _pids(status)
    _receiving(project, project.module("listener")["events_in"], timeout=30)
    assert all(m["restarts"] == 0 for m in project.status()["modules"])


def test_a_broker_package_in_the_working_directory_is_not_run(project: Project) -> None:
    """`python -m broker` must be ours, not a `broker` package of the project's own."""
    impostor = project.root / "broker"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("")
    (impostor / "__main__.py").write_text("print('error: the project\\'s own broker ran')\n")
    status = _start(project)  # project.cli runs from project.root
    assert status["bus"]["broker_running"], status["bus"]
    _receiving(project)


def test_a_stopped_broker_is_taken_for_hung_and_restarted(project: Project) -> None:
    """A broker stopped (SIGSTOP) or hung was never noticed: every module start failed on it
    for as long (exit 72, counted as the module's crash) while status said it ran. It says
    `alive` every second; five missed, it is killed and started again."""
    status = _start(project)
    broker = status["bus"]
    os.kill(broker["broker_pid"], signal.SIGSTOP)
    bus = wait_until(
        lambda: (
            (b := project.status()["bus"])["broker_restarts"] >= 1 and b["broker_running"] and b
        ),
        30,
        "the stopped broker restarted",
        lambda: str(project.status()["bus"]),
    )
    assert bus["broker_pid"] != broker["broker_pid"]
    assert "silent for" in bus["broker_last_exit"]["reason"], bus
    assert _pids(project.status()) == _pids(status)  # no module paid for it
    _receiving(project)


def test_a_start_that_fails_while_the_broker_is_stopped_is_not_held_against_it(
    project: Project,
) -> None:
    """A module that cannot prove its bus because the broker is stopped (exit 72) is not the
    one at fault: it is not counted toward its restart limit, waits while the broker is down,
    and starts once the broker runs again (here it would have failed at its second try)."""
    supervision = {**FAST_SUPERVISION, "start_timeout": 2, "max_restarts": 1}
    project.configure(
        [{"name": "idle", "path": project.probe("idle"), "standby": False}],
        supervision=supervision,
    )
    status = project.up()
    pid, broker = _pids(status)["idle"], status["bus"]["broker_pid"]
    os.kill(broker, signal.SIGSTOP)
    os.kill(pid, signal.SIGKILL)  # its restart cannot prove the bus until the broker is back
    row = wait_until(
        lambda: (r := project.module("idle"))["state"] == "running" and r["pid"] != pid and r,
        40,
        "the module running again once the broker was restarted",
        lambda: f"{project.status()['bus']}\n{(project.root / 'logs/app.log').read_text()}",
    )
    assert project.status()["bus"]["broker_pid"] != broker
    app_log = (project.root / "logs/app.log").read_text()
    assert "the broker was down; not counted" in app_log
    assert "failed:" not in app_log and row["state"] == "running"


HANGS = """
import time


def initialize(event_bus, config):
    time.sleep(3600)


def shutdown():
    pass
"""


def test_a_module_that_hangs_at_up_is_its_own_failure_not_the_brokers(project: Project) -> None:
    """At `up` the modules start before the broker says ready: that moment must not excuse a
    start that then hangs with the broker there all along (`up -d` waited on it for ever)."""
    project.configure(
        [{"name": "slow", "path": project.write_module("slow.py", HANGS), "start_timeout": 3}]
    )
    result = project.cli("up", "-d", check=1)
    assert (
        "slow" in result.stdout + result.stderr and "start timeout" in result.stdout + result.stderr
    ), describe(result)
    assert "the broker was down" not in (project.root / "logs/app.log").read_text()


def test_a_stall_of_the_supervisor_itself_is_not_taken_for_a_broker_outage(
    project: Project,
) -> None:
    """After its own loop stalled (stopped, a VM pause), the supervisor read the broker's queued
    `alive` lines as the broker coming back, and excused the module's own start timeout."""
    project.configure(
        [{"name": "slow", "path": project.write_module("slow.py", HANGS), "start_timeout": 3}]
    )
    supervisor = project.start_foreground()
    app_log = project.root / "logs" / "app.log"

    def count(text: str) -> int:
        return app_log.read_text().count(text) if app_log.exists() else 0

    wait_until(lambda: count("slow starting") >= 2, 30, "its second start (the broker long up)")
    started = [line for line in app_log.read_text().splitlines() if "slow starting" in line][1]
    when = datetime.strptime(started[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    time.sleep(max(0.0, when + 2.5 - time.time()))  # the stall comes just before its deadline
    os.kill(supervisor.pid, signal.SIGSTOP)
    time.sleep(2.2)  # the stall itself (the broker says `alive` every second meanwhile)
    os.kill(supervisor.pid, signal.SIGCONT)
    wait_until(lambda: count("exited (SIGKILL, start timeout)") >= 2, 15, "its start timeout")
    wait_until(lambda: count("slow restarts in") >= 2, 15, "its restart decided")
    assert "the broker was down" not in app_log.read_text(), app_log.read_text()


CHURNER = """
import threading
from pathlib import Path


def _churn(bus, pairs, out):
    def callback(event):
        pass

    for _ in range(pairs):
        bus.subscribe("churn.x", callback)
        bus.unsubscribe("churn.x", callback)
    Path(out).write_text("done")


def initialize(event_bus, config):
    args = (event_bus, config["pairs"], config["out"])
    threading.Thread(target=_churn, args=args, daemon=True).start()


def shutdown():
    pass
"""


def test_subscription_churn_does_not_pile_up_at_the_broker(project: Project) -> None:
    """The broker forwards each subscription change to every publisher, and ZeroMQ reads them
    off a PUB socket only when it is used: towards modules that seldom publish they queued at
    the broker, one module subscribing and unsubscribing in a loop grew it by ~10 MB/s until
    it was killed over its memory limit (every module's events in flight lost)."""
    done = project.root / "churned"
    churner = project.write_module("churner.py", CHURNER)
    project.configure(
        [
            {"name": "quiet", "path": project.probe("idle")},
            {"name": "churner", "path": churner, "config": {"pairs": 120_000, "out": str(done)}},
        ]
    )
    broker = psutil.Process(project.up()["bus"]["broker_pid"])
    before = broker.memory_info().rss
    wait_until(done.exists, 120, "the churner's 120,000 subscribe/unsubscribe pairs")
    grown = (broker.memory_info().rss - before) / (1024 * 1024)
    assert grown < 16, f"the broker grew by {grown:.0f} MB"
    assert project.status()["bus"]["broker_restarts"] == 0


JOB_PRODUCER = """
import os, threading

stop = threading.Event()


def run(event_bus, trigger):
    while not stop.wait(0.02):
        if os.path.exists(trigger):
            count = int(open(trigger).read())
            os.unlink(trigger)
            for n in range(count):
                event_bus.publish("jobs.do", {"n": n})


def initialize(event_bus, config):
    threading.Thread(target=run, args=(event_bus, config["trigger"]), daemon=True).start()


def shutdown():
    stop.set()
"""

JOB_WORKER = """
import os

out = None


def initialize(event_bus, config):
    global out
    out = open(config["out"], "a", buffering=1)
    event_bus.subscribe(
        "jobs.*", lambda event: out.write(f"{event.data['n']}\\n"), group="w", redeliver=True
    )


def shutdown():
    pass
"""


def _group(project: Project, name: str) -> dict[str, Any]:
    groups = (project.status()["bus"].get("groups") or {}).get("groups", [])
    return next((g for g in groups if g["group"] == name), {})


def test_a_restarted_broker_queues_a_redelivering_groups_events_before_its_members_are_back(
    project: Project,
) -> None:
    """The members are stopped (SIGSTOP) across the broker's SIGKILL, so none can join the new
    broker: the jobs published once it is ready reach them only if it kept the group the last
    broker reported, and queued for it. Before, it knew no groups and dropped them all,
    counted nowhere, and app.log said they were counted as dropped."""
    trigger, out = project.root / "trigger", project.root / "jobs.out"
    project.configure(
        [
            {
                "name": "producer",
                "path": project.write_module("producer.py", JOB_PRODUCER),
                "config": {"trigger": str(trigger)},
            },
            {
                "name": "worker",
                "path": project.write_module("worker.py", JOB_WORKER),
                "instances": 2,
                "config": {"out": str(out)},
            },
        ],
        # The workers stay SIGSTOPped while the broker restarts and the jobs queue: under
        # load, past 5 s they were restarted as hung and drained the queue being waited for.
        supervision={**FAST_SUPERVISION, "heartbeat_timeout": 60},
    )
    status = project.up()
    workers = [row["pid"] for row in status["modules"] if row["name"].startswith("worker")]
    wait_until(
        lambda: _group(project, "w").get("redeliver") and _group(project, "w")["members"] == 2,
        10,
        "the broker reporting both members of the redelivering group",
        lambda: str(project.status()["bus"]),
    )
    broker = status["bus"]["broker_pid"]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        os.kill(broker, signal.SIGKILL)
        wait_until(
            lambda: (b := project.status()["bus"])["broker_running"] and b["broker_restarts"] == 1,
            10,
            "the broker restarted and ready",
            lambda: str(project.status()["bus"]),
        )
        trigger.write_text("40")
        wait_until(
            lambda: _group(project, "w").get("queued") == 40,
            10,
            "the 40 jobs queued by the new broker for the group's members",
            lambda: f"{project.status()['bus']}\n{project.module('producer')}",
        )
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)

    def done() -> set[str]:
        return set(out.read_text().split()) if out.exists() else set()

    wanted = {str(n) for n in range(40)}
    wait_until(lambda: done() == wanted, 10, "every job run", lambda: str(sorted(done())))
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "grouped events the broker had queued are lost, uncounted" in app_log, app_log
    assert "themselves; events sent meanwhile are lost" not in app_log, app_log  # grouped too
