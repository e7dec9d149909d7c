"""The loop's side of the endpoint: snapshots only while scraped, the cluster's view asked of the
bridge without waiting for it, the modules' metrics from heartbeats, a clean stop."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import wait_until

from orchestrator.config import AppConfig, MetricsSection
from orchestrator.config.model import ClusterSection
from orchestrator.metrics import MetricsEndpoint, routes
from orchestrator.metrics.endpoint import CLUSTER_INTERVAL, PUBLISH_INTERVAL
from orchestrator.metrics.sampling import TreeSampler


def status() -> dict[str, Any]:
    return {"supervisor": {"started": 1.0}, "modules": [{"name": "a", "state": "running"}]}


def config(tmp_path: Path, cluster: bool) -> AppConfig:
    return AppConfig(
        config_dir=tmp_path,
        main_file=tmp_path / "main.yaml",
        modules_file=tmp_path / "modules.yaml",
        metrics=MetricsSection(listen=("127.0.0.1", 0)),
        cluster=ClusterSection(servers=("nats://127.0.0.1:4222",), host="alpha")
        if cluster
        else None,
    )


def test_off_it_does_nothing(tmp_path: Path) -> None:
    endpoint = MetricsEndpoint(
        AppConfig(tmp_path, tmp_path / "m", tmp_path / "n"), status=status, loop_lag=lambda: 0.0
    )
    assert endpoint.start() is None and endpoint.url() is None
    assert endpoint.next_deadline() is None and endpoint.status() == {"url": None}
    endpoint.tick(1e9)
    endpoint.record("module.error", {"name": "a"})
    assert endpoint.snapshot is None
    endpoint.close()


def test_snapshots_while_scraped_and_the_cluster_view_on_later_turns(tmp_path: Path) -> None:
    replies: list[dict[str, Any] | None] = [None, None]
    asked: list[int] = []

    def waiter() -> dict[str, Any] | None:
        return replies.pop(0) if replies else {"ok": True, "data": {"hosts": [{"host": "beta"}]}}

    def cluster() -> Any:
        asked.append(1)
        return waiter if len(asked) == 1 else {"ok": False, "error": "bridge restarting"}

    lags = iter([0.002, 0.03, 0.001])
    endpoint = MetricsEndpoint(
        config(tmp_path, cluster=True),
        status=status,
        loop_lag=lambda: next(lags, 0.0),
        cluster=cluster,
    )
    assert endpoint.start() is None
    try:
        now = time.monotonic()  # the HTTP side compares snapshots with its clock
        endpoint.tick(now)
        assert endpoint.snapshot is None  # nobody asked: nothing built
        endpoint.wanted = now
        endpoint.record("module.error", {"name": "a", "error": "boom"})
        sent = {"name": "g", "kind": "gauge", "series": [[[], 3]]}
        endpoint.heartbeat("a", {"metrics": [sent]})
        now += PUBLISH_INTERVAL
        endpoint.tick(now)
        first = endpoint.snapshot
        assert first is not None and first.hosts is None and len(asked) == 1
        assert first.loop_lag == 0.03  # the longest turn since the previous snapshot
        assert [e.type for e in first.events] == ["module.error"]
        assert first.module_metrics_sent["a"] == [sent]  # as sent: checked by the HTTP thread
        endpoint.tick(now + 0.1)  # the waiter says "not yet"...
        endpoint.tick(now + 0.2)  # ...and now answers; the next snapshot has the other host
        now += PUBLISH_INTERVAL
        endpoint.tick(now)
        assert endpoint.snapshot is not first and endpoint.snapshot.hosts == ({"host": "beta"},)
        assert len(asked) == 1  # not asked again before CLUSTER_INTERVAL
        now += CLUSTER_INTERVAL
        endpoint.tick(now)  # a failed ask keeps the last rows
        now += PUBLISH_INTERVAL
        endpoint.tick(now)
        assert len(asked) == 2 and endpoint.snapshot.hosts == ({"host": "beta"},)
        page = httpx.get(f"{endpoint.url()}page.json", timeout=5).json()
        assert page["hosts"] == [{"host": "beta"}] and page["host"] == "alpha"
        assert page["events"][0]["data"] == '{"error": "boom", "name": "a"}'
        scraped = httpx.get(f"{endpoint.url()}metrics", timeout=5).text
        assert 'g{module="a"} 3.0' in scraped
    finally:
        endpoint.close()
    assert endpoint.url() is None


def test_the_sampler_counts_a_process_with_its_descendants() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        wait_until(lambda: psutil.Process(child.pid).memory_info().rss > 0, 5, "the child up")
        sampler = TreeSampler()
        own = psutil.Process().memory_info().rss + psutil.Process(child.pid).memory_info().rss
        sample = sampler.sample([os.getpid(), 999_999_999])
        assert list(sample) == [os.getpid()]  # a pid that is gone is left out
        assert sample[os.getpid()]["rss_mb"] >= 0.9 * own / 1024 / 1024
        assert sampler.sample([child.pid])[child.pid]["cpu_percent"] >= 0
    finally:
        child.kill()
        child.wait()


def scraping(endpoint: MetricsEndpoint, now: float) -> float:
    """Ask for, and publish, the next snapshot (as the supervisor's loop would)."""
    endpoint.wanted = now
    now += PUBLISH_INTERVAL
    endpoint.tick(now)
    return now


def test_a_hostile_module_costs_its_own_metrics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Malformed metrics, junk counters and a payload the checks cannot read: each is left out
    (and counted), the rest of /metrics and /status.json is served."""
    junk = {"events_in": "x", "events_out": {1: 0, "a": 1}, "callback_errors": [1]}
    rows = [{"name": n, "state": "running", "pid": 10 + i} for i, n in enumerate("abc")]
    rows[1] |= junk
    endpoint = MetricsEndpoint(
        config(tmp_path, cluster=False), status=lambda: {"modules": rows}, loop_lag=lambda: 0.0
    )
    good = {"name": "g", "kind": "gauge", "labels": [], "series": [[[], 3]]}
    unreadable = [{"name": "boom", "kind": "gauge", "labels": [], "series": [[[], 1]]}]
    real_parse = routes.parse

    def parse(raw: object) -> Any:
        if raw is unreadable:
            raise RuntimeError("a check that trips on what it checks")
        return real_parse(raw)

    monkeypatch.setattr(routes, "parse", parse)
    assert endpoint.start() is None
    try:
        endpoint.heartbeat("a", {"pid": 10, "metrics": [good]})
        bad = [{"name": "h", "kind": "gauge", "labels": [[1]], "series": []}]
        endpoint.heartbeat("b", {"pid": 11, "metrics": bad})
        endpoint.heartbeat("c", {"pid": 12, "metrics": unreadable})
        scraping(endpoint, time.monotonic())
        for _ in range(2):  # and again: a failure is not sticky
            reply = httpx.get(f"{endpoint.url()}metrics", timeout=5)
            assert reply.status_code == 200, reply.text
            assert 'g{module="a"} 3.0' in reply.text
            for module in "bc":
                line = f'orchestrator_module_metrics_rejected_total{{module="{module}"}} 1.0'
                assert line in reply.text
            assert 'orchestrator_module_events_received_total{module="b"} 0.0' in reply.text
        served = httpx.get(f"{endpoint.url()}status.json", timeout=5)
        assert served.status_code == 200
        row = served.json()["modules"][1]
        assert (row["events_in"], row["events_out"], row["callback_errors"]) == (0, 0, 0)
    finally:
        endpoint.close()


def test_a_module_s_metrics_end_with_its_process(tmp_path: Path) -> None:
    """A new process starts from nothing: it sends no metrics if it defines none."""
    rows = [{"name": "a", "state": "running", "pid": 10}]
    endpoint = MetricsEndpoint(
        config(tmp_path, cluster=False), status=lambda: {"modules": rows}, loop_lag=lambda: 0.0
    )
    assert endpoint.start() is None
    try:
        sent = [{"name": "g", "kind": "gauge", "labels": [], "series": [[[], 3]]}]
        endpoint.heartbeat("a", {"pid": 10, "metrics": sent})
        now = scraping(endpoint, time.monotonic())
        assert 'g{module="a"} 3.0' in httpx.get(f"{endpoint.url()}metrics", timeout=5).text
        rows[0] = {"name": "a", "state": "backoff", "pid": None}
        now = scraping(endpoint, now)
        assert endpoint.snapshot is not None and endpoint.snapshot.module_metrics_sent == {}
        endpoint.heartbeat("a", {"pid": 10, "metrics": sent})  # late, from the old process
        rows[0] = {"name": "a", "state": "running", "pid": 11}
        scraping(endpoint, now)
        assert endpoint.snapshot.module_metrics_sent == {}
        assert 'g{module="a"}' not in httpx.get(f"{endpoint.url()}metrics", timeout=5).text
    finally:
        endpoint.close()


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", "text/plain; version=0.0.4; charset=utf-8"),
        (
            "text/plain; version=1.0.0; escaping=allow-utf-8",
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        ("application/openmetrics-text; version=abc", routes._OPENMETRICS),
        ('application/openmetrics-text; version=2.0; x="1"', routes._OPENMETRICS),
        ("text/html, APPLICATION/OpenMetrics-Text;q=0.5", routes._OPENMETRICS),
    ],
)
def test_one_of_two_content_types_whatever_the_accept_header(
    tmp_path: Path, accept: str, expected: str
) -> None:
    endpoint = MetricsEndpoint(config(tmp_path, cluster=False), status=status, loop_lag=lambda: 0.0)
    assert endpoint.start() is None
    try:
        scraping(endpoint, time.monotonic())
        reply = httpx.get(f"{endpoint.url()}metrics", headers={"Accept": accept}, timeout=5)
        assert reply.status_code == 200 and reply.headers["content-type"] == expected
    finally:
        endpoint.close()


@pytest.mark.parametrize("allow_remote", [False, True])
def test_a_foreign_host_name_is_refused_unless_remote_is_allowed(
    tmp_path: Path, allow_remote: bool
) -> None:
    """DNS rebinding: a page on evil.example re-points its name at 127.0.0.1."""
    section = MetricsSection(listen=("127.0.0.1", 0), allow_remote=allow_remote)
    app = dataclasses.replace(config(tmp_path, cluster=False), metrics=section)
    endpoint = MetricsEndpoint(app, status=status, loop_lag=lambda: 0.0)
    assert endpoint.start() is None
    try:
        scraping(endpoint, time.monotonic())
        for path in ("", "status.json"):
            reply = httpx.get(
                f"{endpoint.url()}{path}", headers={"Host": "evil.example"}, timeout=5
            )
            assert reply.status_code == (200 if allow_remote else 421), path
        assert httpx.get(f"{endpoint.url()}", timeout=5).status_code == 200
    finally:
        endpoint.close()
