"""`bus.transport: tcp`: the same system with the broker on TCP ports instead of ipc files."""

from __future__ import annotations

import socket

import yaml
from helpers import wait_until
from project import Project

from orchestrator import exit_codes


def _free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (the OS picks them; a tiny window remains until we bind)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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
    xsub_port, xpub_port = _free_ports(2)
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
        (xpub_port,) = _free_ports(1)
        _use_tcp(project, port, xpub_port)
        result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert "main.yaml: bus.xsub_port: cannot bind port" in result.stderr, result.stderr
    assert f"{port} on 127.0.0.1: Address already in use" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert project.processes() == []
    assert not project.cgroup_left()  # what it opened before the bus failed is closed
