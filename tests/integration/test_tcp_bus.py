"""`bus.transport: tcp`: the same system with the broker on TCP ports instead of ipc files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import yaml
from helpers import free_ports, wait_until
from project import Project, describe

from orchestrator import exit_codes


def _use_tcp(project: Project, xsub_port: int, xpub_port: int) -> None:
    main_file = project.config_dir / "main.yaml"
    main = yaml.safe_load(main_file.read_text())
    main["bus"] = {
        "transport": "tcp",
        "host": "127.0.0.1",
        "xsub_port": xsub_port,
        "xpub_port": xpub_port,
    }
    main["hot_reload"] = False
    main_file.write_text(yaml.safe_dump(main))


def test_the_demo_talks_over_tcp_and_down_leaves_nothing(project: Project) -> None:
    project.copy_demo()
    xsub_port, xpub_port = free_ports(2)
    _use_tcp(project, xsub_port, xpub_port)
    status = project.up()
    assert status["bus"]["xsub"] == f"tcp://127.0.0.1:{xsub_port}"
    assert status["bus"]["xpub"] == f"tcp://127.0.0.1:{xpub_port}"
    wait_until(
        lambda: "Received test.ping: hello" in project.log("mod-dummy-consumer"),
        10,
        "the consumer logs the producer's ping, over tcp",
        lambda: project.log("mod-dummy-consumer"),
    )
    project.cli("publish", "test.ping", '{"message": "over tcp"}', check=0)
    wait_until(
        lambda: "Received test.ping: over tcp" in project.log("mod-dummy-consumer"),
        10,
        "an event from the CLI reaches the consumer",
    )
    project.cli("down", check=0)
    assert project.processes() == []
    with socket.socket() as probe:  # the ports are free again
        probe.bind(("127.0.0.1", xsub_port))


def test_a_taken_port_is_a_one_line_error_and_nothing_starts(project: Project) -> None:
    project.copy_demo()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (xpub_port,) = free_ports(1)
        _use_tcp(project, port, xpub_port)
        result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert "main.yaml: bus.xsub_port: cannot bind port" in result.stderr, result.stderr
    assert f"{port} on 127.0.0.1: Address already in use" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert project.processes() == []
    assert not project.cgroup_left()  # what it opened before the bus failed is closed


# A peer in a process of its own that holds no bus key: it tries to inject a forged event and to
# read what passes for a while, then says how many events it got.
KEYLESS_PEER = """
import sys, time, msgpack, zmq
context = zmq.Context()
pub, sub = context.socket(zmq.PUB), context.socket(zmq.SUB)
for sock in (pub, sub):
    sock.setsockopt(zmq.LINGER, 0)
pub.connect(sys.argv[1])
sub.connect(sys.argv[2])
sub.setsockopt(zmq.SUBSCRIBE, b"")
got, deadline = 0, time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    envelope = msgpack.packb(("orchestrator", "forged-1", time.time(), {"message": "forged"}, 0))
    pub.send_multipart([b"test.ping", envelope])
    if sub.poll(50):
        sub.recv_multipart()
        got += 1
print(got)
"""


def test_a_peer_without_the_bus_key_can_neither_read_nor_inject(project: Project) -> None:
    project.copy_demo()
    xsub_port, xpub_port = free_ports(2)
    _use_tcp(project, xsub_port, xpub_port)
    status = project.up()
    wait_until(
        lambda: "Received test.ping: hello" in project.log("mod-dummy-consumer"),
        10,
        "the demo's own events flow over the keyed tcp bus",
        lambda: project.log("mod-dummy-consumer"),
    )
    peer = subprocess.run(
        [sys.executable, "-c", KEYLESS_PEER, status["bus"]["xsub"], status["bus"]["xpub"], "2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert peer.stdout.strip() == "0", describe(peer)  # while the demo's ping ran every second
    assert "forged" not in project.log("mod-dummy-consumer")
    assert project.status()["bus"]["broker_pid"] == status["bus"]["broker_pid"]
    keys = project.cli("bus-client", check=None)  # no such command: keys are never printed
    assert keys.returncode == exit_codes.USAGE, describe(keys)
    status_text = json.dumps(project.status())
    assert "secret" not in status_text


def test_the_tcp_bus_binds_loopback_only(project: Project) -> None:
    project.copy_demo()
    xsub_port, xpub_port = free_ports(2)
    _use_tcp(project, xsub_port, xpub_port)
    main_file = project.config_dir / "main.yaml"
    main = yaml.safe_load(main_file.read_text())
    main["bus"]["host"] = "0.0.0.0"
    main_file.write_text(yaml.safe_dump(main))
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert "main.yaml: bus.host: the tcp bus binds loopback addresses only" in result.stderr
    assert project.processes() == []
