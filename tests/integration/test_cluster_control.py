"""One view and one control across hosts: `status --cluster`, `restart HOST/NAME`, `logs
HOST/NAME`, and the `host.*` events, with two projects as hosts `alpha` and `beta` (and a third,
`gamma`, that comes and goes) on a real nats-server."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

from cluster_hosts import bridge, configure, wait_connected
from helpers import wait_until
from nats_server import NatsServer
from project import Project, projects


def cluster(project: Project) -> dict[str, Any]:
    return json.loads(project.cli("status", "--cluster", "--json", check=0).stdout)


def host_row(project: Project, host: str) -> dict[str, Any] | None:
    return next((row for row in cluster(project)["hosts"] if row["host"] == host), None)


def host_events(project: Project, change: str, host: str) -> list[dict[str, Any]]:
    return [
        event
        for event in project.recorded()
        if event["type"] == f"host.{change}" and event["data"].get("host") == host
    ]


def test_status_cluster_lists_every_host_and_its_modules(hosts: tuple[Project, Project]) -> None:
    alpha, beta = hosts
    beta_pid = beta.status()["supervisor"]["pid"]
    row = wait_until(lambda: host_row(alpha, "beta"), 10, "beta in alpha's view")
    view = cluster(alpha)
    assert (view["cluster"], view["host"], view["connected"]) == ("orchestrator", "alpha", True)
    first = view["hosts"][0]
    assert (first["host"], first["state"], first["this_host"]) == ("alpha", "up", True)
    assert row["state"] == "up" and row["pid"] == beta_pid and row["version"]
    assert [(m["name"], m["state"]) for m in row["modules"]] == [("recorder", "running")]
    table = alpha.cli("status", "--cluster", check=0).stdout
    assert "alpha up (this host)" in table and "beta up" in table, table
    assert "beta    recorder  running" in table or "beta   recorder" in table, table


def test_restart_host_slash_name_restarts_the_module_on_that_host(
    hosts: tuple[Project, Project],
) -> None:
    alpha, beta = hosts
    before = beta.module("recorder")
    result = alpha.cli("restart", "beta/recorder", check=0)
    after = beta.module("recorder")
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
    assert result.stdout.strip() == f"beta/recorder restarted (pid {after['pid']})"
    shown = json.loads(alpha.cli("status", "beta/recorder", "--json", check=0).stdout)
    assert shown["modules"][0]["pid"] == after["pid"]
    assert "host alpha asks restart" in beta.log("app")


def test_stop_and_start_host_slash_name_hold_and_release_the_module_on_that_host(
    hosts: tuple[Project, Project],
) -> None:
    alpha, beta = hosts
    stopped = alpha.cli("stop", "beta/recorder", check=0)
    assert stopped.stdout.startswith("beta/recorder stopped (stopped by operator)"), stopped.stdout
    assert beta.module("recorder")["state"] == "stopped"
    assert alpha.module("recorder")["state"] == "running"  # alpha's own is not touched
    started = alpha.cli("start", "beta/recorder", check=0)
    after = beta.module("recorder")
    assert after["state"] == "running"
    assert started.stdout.strip() == f"beta/recorder started (pid {after['pid']})"
    assert "host alpha asks stop" in beta.log("app") and "host alpha asks start" in beta.log("app")


def test_logs_host_slash_name_shows_the_other_hosts_log(hosts: tuple[Project, Project]) -> None:
    alpha, beta = hosts
    lines = alpha.cli("logs", "beta/app", "-n", "5", check=0).stdout.splitlines()
    assert len(lines) == 5, lines
    assert set(lines) <= set(beta.log("app").splitlines()), lines
    assert any("host alpha asks logs of this host" in line for line in lines), lines
    assert alpha.cli("logs", "beta/app", "-f", check=2).stderr.count("--follow") == 1


def test_asking_a_host_or_module_that_is_not_there(hosts: tuple[Project, Project]) -> None:
    alpha, _ = hosts
    missing = alpha.cli("restart", "nowhere/recorder", check=4)
    assert "no host 'nowhere' answers in cluster 'orchestrator'" in missing.stderr
    assert "beta" in missing.stderr  # the hosts that do
    unknown = alpha.cli("restart", "beta/nope", check=2)
    assert "no enabled module named 'nope'" in unknown.stderr
    refused = alpha.cli("status", "beta/", check=2)
    assert "expected HOST/NAME" in refused.stderr
    own = alpha.cli("status", "alpha/recorder", "--json", check=0)  # this host: asked directly
    assert json.loads(own.stdout)["modules"][0]["name"] == "recorder"


def test_hosts_joining_lost_and_leaving_are_events_and_states(
    server: NatsServer, hosts: tuple[Project, Project]
) -> None:
    alpha, _ = hosts
    gamma_projects = projects()
    try:
        gamma = next(gamma_projects)
        configure(gamma, "gamma", {"servers": [server.url]})
        pid = gamma.up()["supervisor"]["pid"]
        wait_connected(gamma)
        wait_until(lambda: host_events(alpha, "joined", "gamma"), 10, "host.joined gamma")
        wait_until(lambda: host_row(gamma, "alpha"), 10, "gamma's view has alpha")
        os.kill(pid, signal.SIGKILL)  # no goodbye: lost, once its announcements stop
        lost = wait_until(lambda: host_events(alpha, "lost", "gamma"), 10, "host.lost gamma")
        assert "no announcement for" in lost[0]["data"]["reason"]
        assert host_row(alpha, "gamma")["state"] == "unreachable"  # type: ignore[index]
        assert bridge(alpha)["peers"]["unreachable"] == ["gamma"]
        assert "1 unreachable (gamma)" in alpha.cli("status", check=0).stdout
        failed = alpha.cli("restart", "gamma/recorder", check=4)
        assert "did not answer" in failed.stderr or "no host 'gamma'" in failed.stderr
        gamma.up()
        wait_until(lambda: len(host_events(alpha, "joined", "gamma")) == 2, 10, "gamma again")
        gamma.cli("down", check=0)
        left = wait_until(
            lambda: host_events(alpha, "left", "gamma"),
            10,
            "host.left gamma",
            lambda: f"{alpha.recorded()}\n{alpha.log('app')}\n{gamma.log('app')}",
        )
        assert left[0]["source"] == "orchestrator"
        assert host_row(alpha, "gamma")["state"] == "left"  # type: ignore[index]
        assert bridge(alpha)["peers"] == {"up": ["beta"], "unreachable": [], "left": ["gamma"]}
    finally:
        gamma_projects.close()


def test_status_cluster_outside_cluster_mode_is_a_usage_error(project: Project) -> None:
    project.configure([])
    project.up()
    result = project.cli("status", "--cluster", check=2)
    assert "not in cluster mode" in result.stderr
    assert "not in cluster mode" in project.cli("restart", "beta/x", check=2).stderr
