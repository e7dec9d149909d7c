"""The metrics endpoint of a real supervisor: scraped with httpx, parsed by prometheus_client;
the modules' own metrics through the child channel; hostile clients; start-up errors."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import httpx
from helpers import wait_until
from nats_server import NatsServer
from project import Project, projects
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.metrics.module_metrics import MAX_CHANNEL_MESSAGE
from orchestrator.metrics.server import MAX_CONNECTIONS

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
TOKEN = "tok-6f1d0c9e77"


def scrape(url: str) -> Samples:
    """Sample name -> {sorted labels: value}, as Prometheus reads the text format."""
    reply = httpx.get(url + "metrics", timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def metrics_url(project: Project) -> str:
    url = project.status()["metrics"]["url"]
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), url
    return url


def test_a_scrape_shows_supervisor_modules_webhooks_and_module_metrics(project: Project) -> None:
    project.env["HOOK_TOKEN"] = TOKEN
    project.configure(
        [{"name": "metered", "path": project.probe("metered")}],
        metrics={"listen": "127.0.0.1:0"},
        app={"name": "shop", "version": "2.1"},
        notifications={"webhooks": [{"url": "http://127.0.0.1:9/hook?token=${HOOK_TOKEN}"}]},
    )
    project.up()
    url = metrics_url(project)
    project.cli("restart", "metered", check=0)
    project.cli("publish", "probe.ping", '"a"', check=0)
    metered = (("module", "metered"),)

    def pinged() -> Samples | None:
        got = scrape(url)
        return got if got.get("probe_pings_total", {}).get((("kind", "a"), *metered)) else None

    got = wait_until(pinged, 15, "the module's counter, through its heartbeats")
    (info,) = got["orchestrator_app_info"]
    assert ("app", "shop") in info and ("version", "2.1") in info
    assert got["orchestrator_module_state"][(*metered, ("state", "running"))] == 1
    assert got["orchestrator_module_restarts_total"][metered] == 1
    assert got["orchestrator_module_events_received_total"][metered] >= 1
    assert got["orchestrator_module_heartbeat_age_seconds"][metered] >= 0
    assert got["orchestrator_module_resident_memory_bytes"][metered] > 1_000_000
    (exit_labels,) = got["orchestrator_module_last_exit_code"]
    assert ("reason", "stopped") in exit_labels
    assert got["orchestrator_supervisor_resident_memory_bytes"][()] > 1_000_000
    assert got["process_open_fds"][()] > 0  # the conventional process_* of the supervisor
    assert got["orchestrator_loop_lag_seconds"][()] >= 0
    assert got["probe_depth"] == {metered: 42}
    assert got["probe_seconds_bucket"][(("le", "1.0"), *metered)] == 1
    assert got["probe_seconds_count"][metered] == 1
    (hook,) = got["orchestrator_webhook_deliveries_total"]
    assert hook[0][1].startswith("http://127.0.0.1:9/hook"), hook  # scrubbed, as in status
    assert got["orchestrator_webhook_breaker_state"][(("state", "closed"), *hook)] == 1
    # OpenMetrics for a scraper that asks for it; the token appears nowhere.
    reply = httpx.get(
        url + "metrics", headers={"Accept": "application/openmetrics-text"}, timeout=10
    )
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.text.endswith("# EOF\n")
    for path in ("metrics", "status.json", "page.json"):
        assert TOKEN not in httpx.get(url + path, timeout=10).text, path
    # /status.json: what `status --json` prints.
    served: dict[str, Any] = httpx.get(url + "status.json", timeout=10).json()
    cli = project.status()
    assert served.keys() == cli.keys()
    assert served["supervisor"]["pid"] == cli["supervisor"]["pid"]
    assert [(m["name"], m["pid"], m["restarts"]) for m in served["modules"]] == [
        (m["name"], m["pid"], m["restarts"]) for m in cli["modules"]
    ]


def test_hostile_clients_do_not_hold_the_supervisor(project: Project) -> None:
    project.configure(
        [{"name": "idle", "path": project.probe("idle")}], metrics={"listen": "127.0.0.1:0"}
    )
    project.up()
    url = metrics_url(project)
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    address = (host, int(port))
    # A head far over its bound is refused with a 431 (on a connection of its own: the slots
    # are not all taken yet).
    with socket.create_connection(address, timeout=10) as huge:
        huge.sendall(b"GET / HTTP/1.1\r\nX: " + b"a" * 100_000)
        assert _read_all(huge).startswith(b"HTTP/1.1 431")
    # Many connections that never finish their request: more than the slots.
    held = [socket.create_connection(address, timeout=10) for _ in range(50)]
    try:
        for sock in held:
            with contextlib.suppress(OSError):  # one refused at once may be closed already
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        # The supervisor's loop is untouched: it restarts a module and answers as usual.
        project.cli("restart", "idle", check=0)
        assert project.module("idle")["restarts"] == 1
        # The server frees the slots itself, though the clients keep their sockets open: the
        # oldest give their place to those past the bound (closed at once), the others get a
        # 408 after the read timeout...
        answers = [_read_all(sock) for sock in held]
        timed_out = [answer for answer in answers if answer.startswith(b"HTTP/1.1 408")]
        # (One slot may still be the 431's, if the server had not yet seen that client close.)
        assert MAX_CONNECTIONS - 1 <= len(timed_out) <= MAX_CONNECTIONS, [a[:20] for a in answers]
        assert answers.count(b"") == len(held) - len(timed_out)
        # ...and the endpoint serves again meanwhile.
        wait_until(lambda: _serves(url), 15, "the endpoint serving again")
    finally:
        for sock in held:
            sock.close()


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes (b"" for a connection closed or reset at once)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_heartbeat_over_the_channel_s_bound_never_reaches_the_loop(project: Project) -> None:
    """ZeroMQ drops it (with the connection) unread: the module counts as silent, and is
    restarted as hung, rather than costing the supervisor's loop the reading of it."""
    path = project.write_module("huge.py", HUGE_HEARTBEATS)
    project.configure(
        [{"name": "huge", "path": path, "heartbeat_interval": 0.2, "heartbeat_timeout": 2}],
        metrics={"listen": "127.0.0.1:0"},
    )
    project.up()
    url = metrics_url(project)

    def hung() -> bool:
        last = project.module("huge").get("last_exit")
        return isinstance(last, dict) and last.get("reason") == "hung"

    wait_until(hung, 20, "the module restarted as hung")
    assert "probe_huge" not in scrape(url)


HUGE_HEARTBEATS = f"""
from typing import Any

from module_sdk import metrics


def huge() -> dict[str, Any]:
    gauge = {{"name": "probe_huge", "kind": "gauge", "labels": [], "series": [[[], 1]]}}
    return {{"metrics": [gauge, "x" * {MAX_CHANNEL_MESSAGE + 1024}]}}


metrics.REGISTRY.heartbeat_fields = huge  # type: ignore[method-assign]


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    pass


def shutdown() -> None:
    pass
"""


def _serves(url: str) -> bool:
    try:
        return httpx.get(url + "metrics", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_port_in_use_stops_up_before_any_module_starts(project: Project) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        project.configure(
            [{"name": "idle", "path": project.probe("idle")}],
            metrics={"listen": f"127.0.0.1:{port}"},
        )
        result = project.cli("up", "-d", check=1)
    why = f"metrics.listen 127.0.0.1:{port}: cannot listen: Address already in use"
    assert why in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr  # the broker started early: stopped
    assert "idle module says hi" not in project.log("idle")
    assert project.processes() == []
    assert "could not be forked" not in (project.root / "logs/app.log").read_text()


def test_an_invalid_listen_is_a_config_error(project: Project) -> None:
    project.configure([], metrics={"listen": "everywhere"})
    result = project.cli("up", "-d", check=3)
    assert "main.yaml: metrics.listen: expected HOST:PORT" in result.stderr, result.stderr


def test_in_cluster_mode_the_page_lists_the_other_hosts(server: NatsServer) -> None:
    alpha_projects, beta_projects = projects(), projects()
    alpha, beta = next(alpha_projects), next(beta_projects)
    try:
        alpha.configure(
            [],
            cluster={"host": "alpha", "servers": [server.url]},
            metrics={"listen": "127.0.0.1:0"},
        )
        beta.configure(
            [{"name": "idle", "path": beta.probe("idle")}],
            cluster={"host": "beta", "servers": [server.url]},
        )
        alpha.up()
        beta.up()
        url = metrics_url(alpha)

        def beta_listed() -> dict[str, Any] | None:
            page = httpx.get(url + "page.json", timeout=10).json()
            rows = [row for row in page["hosts"] or [] if row.get("host") == "beta"]
            return rows[0] if rows and rows[0].get("state") == "up" else None

        row = wait_until(beta_listed, 20, "beta in the page's hosts")
        assert [m["name"] for m in row["modules"]] == ["idle"]
        page = httpx.get(url + "page.json", timeout=10).json()
        assert page["host"] == "alpha"
    finally:
        for generator in (alpha_projects, beta_projects):
            generator.close()
