"""Whatever a client sends to the control socket gets an answer (a CLI never waits for nothing),
and a flood of bad requests costs the log a few lines, not one per request."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq
from project import Project

from orchestrator.rundir import RunDir

REPLY_WAIT_MS = 5_000  # only stops a hung test; a reply comes in milliseconds
FLOOD = 2_000
BATCH = 100  # requests in flight at once: well under the sockets' high-water marks

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


def test_a_huge_request_is_dropped_before_it_costs_the_supervisor(
    running: Project, dealer: zmq.Socket[bytes]
) -> None:
    pid = running.status()["supervisor"]["pid"]

    def peak_mb() -> float:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    before = peak_mb()
    huge = msgpack.packb({"cmd": "status", "pad": b"x" * (65 << 20)})  # past MAX_REQUEST
    for _ in range(4):
        dealer.send(huge)
    dealer.setsockopt(zmq.RCVTIMEO, 2_000)
    with pytest.raises(zmq.Again):  # no answer: ZeroMQ dropped it, and the connection
        dealer.recv()
    assert running.status()["supervisor"]["pid"] == pid  # still there, still answering
    assert peak_mb() - before < 64, "the supervisor took a request bigger than any command's"
