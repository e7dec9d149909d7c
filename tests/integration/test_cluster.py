"""Cluster mode with a real nats-server: two projects on this machine act as two hosts, `alpha`
and `beta`, each with its own supervisor, broker, bridge and recorder module."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_hosts import (
    bridge,
    configure,
    crosses,
    project_modules,
    publish,
    received,
    wait_connected,
    wait_received,
)
from helpers import free_ports, wait_until
from nats_server import NatsServer
from project import Project, alive, projects
from test_tcp_bus import _use_tcp


def test_events_cross_both_ways_with_source_and_id_once(hosts: tuple[Project, Project]) -> None:
    alpha, beta = hosts
    one = publish(alpha, "x.one", {"n": 1})
    event = wait_received(beta, one)
    assert (event["type"], event["data"], event["source"]) == ("x.one", {"n": 1}, "cli")
    two = publish(beta, "x.two", {"n": 2})
    event = wait_received(alpha, two)
    assert (event["type"], event["data"], event["source"]) == ("x.two", {"n": 2}, "cli")
    # Markers published after, both ways: once each has arrived, an echo or a loop of the
    # first two would have too.
    ends = [publish(alpha, "x.end", {}), publish(beta, "x.end", {})]
    for project in (alpha, beta):
        for end in ends:
            wait_received(project, end)
    for project in (alpha, beta):
        for event_id in (one, two, *ends):
            assert len(received(project, event_id)) == 1, (event_id, project.recorded())


def test_only_exported_patterns_leave_a_host(hosts: tuple[Project, Project]) -> None:
    alpha, beta = hosts
    local = publish(alpha, "y.local", {})  # alpha exports x.* and module.* only
    wait_received(alpha, local)
    marker = publish(alpha, "x.after", {})
    wait_received(beta, marker)
    assert received(beta, local) == []


def test_built_in_events_cross_with_their_host_named(hosts: tuple[Project, Project]) -> None:
    alpha, beta = hosts
    alpha.cli("restart", "recorder", check=0)

    def restarted_on_alpha() -> list[dict[str, Any]]:
        return [
            e
            for e in beta.recorded()
            if e["type"] == "module.restarted" and e["data"].get("host") == "alpha"
        ]

    event = wait_until(restarted_on_alpha, 10, "alpha's module.restarted on beta")[0]
    assert event["source"] == "orchestrator" and event["data"]["name"] == "recorder"


def test_status_shows_the_bridge(hosts: tuple[Project, Project]) -> None:
    alpha, _ = hosts
    status = alpha.status()
    names = [row["name"] for row in status["system"]]
    assert names == ["broker", "bridge"], status["system"]
    assert status["bus"]["broker_running"] is True  # the broker's fields stay where they were
    row = wait_until(
        lambda: (row := bridge(alpha))["exported"] >= 1 and row["imported"] >= 1 and row,
        5,
        "the bridge's counts of events out and in",
    )
    assert row["unsent"] == 0, row
    table = alpha.cli("status", check=0).stdout
    assert "bridge running" in table and "host alpha" in table and "nats connected" in table
    assert "events out" in table, table


def test_a_killed_bridge_is_restarted_and_events_flow_again(
    hosts: tuple[Project, Project],
) -> None:
    alpha, beta = hosts
    before = bridge(alpha)
    recorder_pid = alpha.module("recorder")["pid"]
    os.kill(before["pid"], signal.SIGKILL)
    wait_until(
        lambda: (
            (row := bridge(alpha))["restarts"] == before["restarts"] + 1
            and row["pid"] not in (None, before["pid"])
            and row
        ),
        10,
        "the bridge restarted",
    )
    wait_connected(alpha)
    assert not alive(before["pid"])
    assert "SIGKILL" in bridge(alpha)["last_exit"]["description"]
    assert alpha.module("recorder")["pid"] == recorder_pid  # no module restarts for it
    event = publish(alpha, "x.again", {})
    wait_received(beta, event)
    back = publish(beta, "x.back", {})
    wait_received(alpha, back)


def test_a_reload_that_changes_cluster_restarts_the_bridge_and_one_without_stops_it(
    server: NatsServer, project: Project
) -> None:
    configure(project, "alpha", {"servers": [server.url]})
    project.up()
    first = wait_connected(project)
    main_file = project.config_dir / "main.yaml"
    main = yaml.safe_load(main_file.read_text())
    main_file.write_text(yaml.safe_dump({**main, "bus": {"high_water_mark": 5000}}))
    plan = json.loads(project.cli("reload", "--json", check=0).stdout)
    assert any("bus" in section for section in plan["not_applied"]), plan
    assert bridge(project)["pid"] == first["pid"]  # bus changes wait for `up`, here too
    configure(project, "alpha", {"servers": [server.url], "export": ["x.*"]})
    plan = json.loads(project.cli("reload", "--json", check=0).stdout)
    assert plan["not_applied"] == ["bus"] and plan["restart"] == {}, plan  # bus back to default
    second = wait_connected(project)
    assert second["pid"] != first["pid"]
    recorder_pid = project.module("recorder")["pid"]
    project.configure(project_modules(project))  # no cluster: any more
    project.cli("reload", check=0)
    assert [row["name"] for row in project.status()["system"]] == ["broker"]
    assert not alive(second["pid"])
    assert project.module("recorder")["pid"] == recorder_pid  # modules untouched


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    """Three nats-server nodes routed into one cluster."""
    nodes: list[NatsServer] = []
    try:
        cluster = ["--cluster_name", "orch-test", "--cluster", "nats://127.0.0.1:-1"]
        nodes.append(NatsServer(tmp_path / "n0.log", *cluster))
        seed = nodes[0].route_url()
        for index in (1, 2):
            nodes.append(NatsServer(tmp_path / f"n{index}.log", *cluster, "--routes", seed))
        wait_until(lambda: all(node.routes() >= 2 for node in nodes), 10, "a full mesh of routes")
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_events_keep_crossing_when_the_nats_node_of_a_host_dies(
    nats_cluster: list[NatsServer],
) -> None:
    urls = [node.url for node in nats_cluster]
    alpha_projects, beta_projects = projects(), projects()
    alpha, beta = next(alpha_projects), next(beta_projects)
    try:
        configure(alpha, "alpha", {"servers": urls})
        configure(beta, "beta", {"servers": urls})
        alpha.up()
        beta.up()
        before = wait_connected(alpha)["nats"]
        wait_connected(beta)
        node = next(n for n in nats_cluster if before.endswith(f":{n.port}"))
        node.stop()
        wait_until(
            lambda: (now := bridge(alpha)["nats"]).startswith("connected") and now != before,
            10,
            "alpha reconnected to another node",
            lambda: alpha.log("app"),
        )
        wait_connected(beta)
        # Interest travels between nodes by itself, a moment after each (re)subscription:
        # publish until one gets through, both ways.
        for source, sink in ((alpha, beta), (beta, alpha)):
            wait_until(crosses(source, sink), 10, "an event across the failed-over cluster")
        assert alpha.module("recorder")["restarts"] == 0 == beta.module("recorder")["restarts"]
        assert bridge(alpha)["restarts"] == 0  # the client reconnected; nothing restarted
    finally:
        for generator in (alpha_projects, beta_projects):
            generator.close()


def test_a_host_on_a_tcp_bus_bridges_with_its_curve_keys(
    server: NatsServer, hosts: tuple[Project, Project]
) -> None:
    """The bridge joins a CURVE-encrypted tcp bus with the client keys it is handed."""
    _, beta = hosts
    gamma_projects = projects()
    gamma = next(gamma_projects)
    try:
        configure(gamma, "gamma", {"servers": [server.url]})
        _use_tcp(gamma, *free_ports(2))
        assert gamma.up()["bus"]["transport"] == "tcp"
        wait_connected(gamma)
        wait_until(crosses(gamma, beta), 10, "an event from the tcp bus to beta")
        wait_until(crosses(beta, gamma), 10, "an event from beta to the tcp bus")
    finally:
        gamma_projects.close()


def test_the_bridge_goes_with_a_killed_supervisor(server: NatsServer, project: Project) -> None:
    configure(project, "alpha", {"servers": [server.url]})
    status = project.up()
    row = wait_connected(project)
    os.kill(status["supervisor"]["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(row["pid"]), 5, "the bridge gone with its supervisor")


def test_down_leaves_no_bridge(server: NatsServer, project: Project) -> None:
    configure(project, "alpha", {"servers": [server.url]})
    project.up()
    row = wait_connected(project)
    project.cli("down", check=0)
    assert not alive(row["pid"]) and project.processes() == []
    assert "bridge" in project.log("app") and "Traceback" not in project.log("app")
