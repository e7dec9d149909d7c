"""Whatever a client sends to the control socket gets an answer (a CLI never waits for nothing),
and a flood of bad requests costs the log a few lines, not one per request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq
from project import Project

from orchestrator import control
from orchestrator.rundir import RunDir

REPLY_WAIT_MS = 5_000  # only stops a hung test; a reply comes in milliseconds
FLOOD = 2_000
BATCH = 8  # requests in flight at once: well under the control socket's high-water mark
GREEDY = 200  # `logs` requests of a client that never reads the replies

BAD_REQUESTS: dict[str, list[bytes]] = {
    "not msgpack": [b"\xc1"],
    "truncated msgpack": [msgpack.packb({"cmd": "status"})[:-2]],
    "empty": [b""],
    "a list": [msgpack.packb(["status"])],
    "a string": [msgpack.packb("status")],
    "an integer": [msgpack.packb(7)],
    "two frames": [msgpack.packb({"cmd": "status"}), b"extra"],
    "no cmd": [msgpack.packb({"name": "idle"})],
    "cmd not a string": [msgpack.packb({"cmd": 5})],
    "cmd as bytes": [msgpack.packb({"cmd": b"status"})],
    "unknown cmd": [msgpack.packb({"cmd": "format_disk"})],
}


@pytest.fixture
def running(project: Project) -> Project:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    return project


@pytest.fixture
def dealer(running: Project) -> Iterator[zmq.Socket[bytes]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(RunDir(running.config_dir, running.run_base).control)
    yield sock
    sock.close()
    context.term()


def answer(sock: zmq.Socket[bytes]) -> dict[str, object]:
    assert sock.poll(REPLY_WAIT_MS, zmq.POLLIN), "no reply"
    frames = sock.recv_multipart()
    assert len(frames) == 1, frames
    reply = msgpack.unpackb(frames[0], raw=False)
    assert isinstance(reply, dict), reply
    return reply


def test_each_bad_request_gets_a_short_error_reply(dealer: zmq.Socket[bytes]) -> None:
    for kind, frames in BAD_REQUESTS.items():
        dealer.send_multipart(frames)
        reply = answer(dealer)
        assert reply["ok"] is False and isinstance(reply["error"], str), (kind, reply)
        assert 10 < len(reply["error"]) < 300, (kind, reply)  # says what was wrong, briefly
        dealer.send(msgpack.packb({"cmd": "status"}))
        assert answer(dealer)["ok"] is True, kind  # the same client is still served

    dealer.send(msgpack.packb({"cmd": "format_disk"}))
    error = str(answer(dealer)["error"])
    assert "format_disk" in error and "status" in error and "restart" in error, error

    huge = 50 * 1024 * 1024  # handled before: it must still be, with a short reply
    for frame in (msgpack.packb({"cmd": "x" * huge}), b"\xc1" * huge):
        dealer.send(frame)
        reply = answer(dealer)
        assert reply["ok"] is False and len(str(reply["error"])) < 300, str(reply)[:300]


def test_floods_of_bad_requests_and_child_messages_cost_the_log_a_few_lines(
    running: Project, dealer: zmq.Socket[bytes]
) -> None:
    app_log = running.root / "logs" / "app.log"
    before = len(app_log.read_text().splitlines())
    kinds = [BAD_REQUESTS[k] for k in ("not msgpack", "empty", "a list", "two frames")]
    for start in range(0, FLOOD, BATCH):
        for n in range(start, start + BATCH):
            dealer.send_multipart(kinds[n % len(kinds)])
        for _ in range(BATCH):
            assert answer(dealer)["ok"] is False
    # A module (or anyone who can reach the child channel) sending garbage: no replies there.
    child = dealer.context.socket(zmq.DEALER)
    child.setsockopt(zmq.LINGER, 0)
    try:
        child.connect(RunDir(running.config_dir, running.run_base).child_channel)
        for n in range(FLOOD):
            child.send_multipart(kinds[n % len(kinds)])
        assert running.module("idle")["state"] == "running"  # the CLI is served as before
        running.cli("down", check=0)
    finally:
        child.close()
    added = app_log.read_text().splitlines()[before:]
    for what in ("control request", "child message"):  # the first in full, then a count
        lines = [line for line in added if f"malformed {what}" in line]
        assert len(lines) == 2, "\n".join(added)
        assert f"ignored a malformed {what}: " in lines[0]
        assert f"ignored {FLOOD - 1} more malformed {what}s since" in lines[1]
    assert len(added) < 20, "\n".join(added)


def test_down_against_a_stopped_supervisor_says_so_at_once(running: Project) -> None:
    """It waited five minutes for an answer that could not come, saying nothing."""
    import os
    import signal

    pid = running.status()["supervisor"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        result = running.cli("down", timeout=30, check=1)
        assert f"kill -CONT {pid}" in result.stderr, result.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    running.cli("down", check=0)
    assert running.processes() == []


def test_a_run_directory_that_cannot_be_made_is_one_line(running: Project) -> None:
    """A read-only or full file system, or a file where a directory should be: a traceback."""
    base = running.root / "not-a-dir"
    base.write_text("")
    running.env["ORCHESTRATOR_RUN_BASE"] = str(base / "run")
    result = running.cli("up", "-d", check=1)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error: cannot prepare the run directory"), (
        result.stderr
    )


def _peak_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_huge_request_is_dropped_before_it_costs_the_supervisor(
    running: Project, dealer: zmq.Socket[bytes]
) -> None:
    pid = running.status()["supervisor"]["pid"]

    before = _peak_mb(pid)
    huge = msgpack.packb({"cmd": "status", "pad": b"x" * (65 << 20)})  # past MAX_REQUEST
    for _ in range(4):
        dealer.send(huge)
    dealer.setsockopt(zmq.RCVTIMEO, 2_000)
    with pytest.raises(zmq.Again):  # no answer: ZeroMQ dropped it, and the connection
        dealer.recv()
    assert running.status()["supervisor"]["pid"] == pid  # still there, still answering
    assert _peak_mb(pid) - before < 64, "the supervisor took a request bigger than any command's"


def test_requests_that_would_build_gigabytes_are_refused_at_their_header(
    running: Project, dealer: zmq.Socket[bytes]
) -> None:
    """A 32 MB request of 32 million empty maps took the supervisor to 2.4 GB and its loop 9 s:
    the control socket had no msgpack limits. A legit request (a 120 KB `publish`) still goes."""
    pid = running.status()["supervisor"]["pid"]

    before = _peak_mb(pid)
    for bomb, why in (
        ({"cmd": "status", "pad": [{}] * (4 << 20)}, "max_array_len"),
        ({"cmd": "status", "pad": [[0] * 4000] * 1000}, "items in all"),
        ({"cmd": "status", "pad": b"x" * (control.MAX_REQUEST + 1)}, "too large"),
    ):
        dealer.send(msgpack.packb(bomb))
        reply = answer(dealer)
        assert reply["ok"] is False and why in str(reply["error"]), str(reply)[:300]
    assert _peak_mb(pid) - before < 64, "the supervisor built what a request described"
    data = json.dumps({"text": "x" * 120_000})
    running.cli("publish", "test.large", data, check=0)


def test_a_client_that_never_reads_its_replies_gets_a_few_queued_at_most(
    running: Project, dealer: zmq.Socket[bytes]
) -> None:
    """Four clients that pipelined 1100 `logs` (512 KB replies) and never read took the
    supervisor to 2.1 GB: ZeroMQ queued 1000 replies for each. Past a few, they are dropped."""
    with (running.root / "logs" / "idle.log").open("a") as log_file:
        log_file.writelines(f"line {n} {'x' * 50}\n" for n in range(12_000))  # 700 KB
    greedy = dealer.context.socket(zmq.DEALER)
    greedy.setsockopt(zmq.LINGER, 0)
    greedy.setsockopt(zmq.RCVHWM, 1)  # its own side holds one
    greedy.setsockopt(zmq.RCVBUF, 4096)
    try:
        greedy.connect(RunDir(running.config_dir, running.run_base).control)
        for _ in range(GREEDY):
            greedy.send(msgpack.packb({"cmd": "logs", "name": "idle", "lines": 10_000}))
        greedy.send(msgpack.packb({"cmd": "stop", "name": "idle"}))  # handled after them all
        dealer.send(msgpack.packb({"cmd": "status"}))
        assert answer(dealer)["ok"] is True  # a CLI meanwhile is served
        running.wait_module("idle", state="stopped")
        received = 0
        while greedy.poll(1_000, zmq.POLLIN):
            greedy.recv()
            received += 1
    finally:
        greedy.close()
    assert 0 < received <= control.HWM + 4, received


# What binds control.sock in these tests: a supervisor of another version, or not one at all. It
# takes the run directory's lock (so the CLI finds it), answers each request with the raw reply
# given for its cmd, and exits after answering `down`.
FOREIGN = """
import sys, msgpack, zmq
from pathlib import Path
from orchestrator.rundir import RunDir
run_dir = RunDir(Path(sys.argv[1]), Path(sys.argv[2]))
replies = msgpack.unpackb(bytes.fromhex(sys.argv[3]))
run_dir.acquire()
context = zmq.Context()
sock = context.socket(zmq.ROUTER)
sock.bind(run_dir.control)
print("ready", flush=True)
while True:
    identity, payload = sock.recv_multipart()
    cmd = msgpack.unpackb(payload)["cmd"]
    sock.send_multipart([identity, replies[cmd]])
    if cmd == "down":
        break
sock.close(linger=2000)
context.term()
run_dir.release()
"""

MODULE_ROW = {"name": "m", "state": "running", "pid": 42, "uptime": 3.0, "restarts": 0}
STATUS = {"supervisor": {"pid": 1, "uptime": 3.0}, "bus": {}, "modules": [MODULE_ROW]}


@pytest.fixture
def foreign(project: Project) -> Iterator[Callable[[dict[str, bytes]], subprocess.Popen[str]]]:
    """Starts a foreign control server for `project` with the raw replies it is given."""
    project.configure([])
    started: list[subprocess.Popen[str]] = []

    def start(replies: dict[str, bytes]) -> subprocess.Popen[str]:
        arguments = [str(project.config_dir), str(project.run_base), msgpack.packb(replies).hex()]
        server = subprocess.Popen(
            [sys.executable, "-c", FOREIGN, *arguments], stdout=subprocess.PIPE, text=True
        )
        started.append(server)
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        return server

    yield start
    for server in started:
        server.kill()
        server.wait()


def _ok(data: object) -> bytes:
    return msgpack.packb({"ok": True, "data": data})


@pytest.mark.parametrize(
    "data",
    [
        STATUS,  # no "limits"; the module row lacks last_exit, rss_mb, events_in, ...
        {**STATUS, "limits": None, "modules": [{**MODULE_ROW, "last_exit": {"code": 1}}]},
        {**STATUS, "supervisor": None, "modules": [{**MODULE_ROW, "uptime": "long"}]},
    ],
    ids=["fields missing", "fields of another shape", "values of another type"],
)
def test_a_status_answer_missing_fields_shows_them_as_dashes(
    project: Project, foreign: Callable[[dict[str, bytes]], subprocess.Popen[str]], data: object
) -> None:
    foreign({"status": _ok(data)})
    result = project.cli("status", check=0)
    row = result.stdout.splitlines()[-1].split()
    assert row[:3] == ["m", "running", "42"] and "-" in row, result.stdout


@pytest.mark.parametrize(
    "reply",
    [
        b"\xc1",  # not msgpack
        msgpack.packb(["ok"]),  # not a map
        _ok(["a", "list"]),  # a map, its data of no shape status knows
        _ok({**STATUS, "system": 5}),
    ],
    ids=["not msgpack", "not a map", "data not a map", "a field of another type"],
)
def test_a_status_answer_of_another_shape_is_one_line(
    project: Project, foreign: Callable[[dict[str, bytes]], subprocess.Popen[str]], reply: bytes
) -> None:
    foreign({"status": reply})
    result = project.cli("status", check=1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "malformed reply" in lines[0] or "another version" in lines[0], lines


@pytest.mark.parametrize("data", [{}, {"pid": None}, {"pid": "abc"}, None])
def test_down_with_an_answer_without_its_pid_waits_on_the_pid_it_knows(
    project: Project, foreign: Callable[[dict[str, bytes]], subprocess.Popen[str]], data: object
) -> None:
    """It crashed (KeyError, TypeError, ValueError) after the supervisor had already stopped."""
    server = foreign({"down": _ok(data)})
    result = project.cli("down", check=0)
    assert result.stdout == f"stopped (supervisor pid {server.pid})\n", result.stderr
    assert server.wait(10) == 0
