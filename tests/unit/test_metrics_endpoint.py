"""The loop's side of the endpoint: snapshots only while scraped, the cluster's view asked of the
bridge without waiting for it, the modules' metrics from heartbeats, a clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from helpers import wait_until

from orchestrator.config import AppConfig, MetricsSection
from orchestrator.config.model import ClusterSection
from orchestrator.metrics import MetricsEndpoint
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
