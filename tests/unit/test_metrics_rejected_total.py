"""`orchestrator_module_metrics_rejected_total` never goes down while the supervisor runs: what a
module has left out now fell when another module stopped (its fair share grew), and Prometheus
read that as a counter reset, then the rise back as new rejections (`increase()` alerts fired)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from test_metrics_families import snapshot

from orchestrator.metrics.families import RejectedTotals, SnapshotCollector, defined_families
from orchestrator.metrics.module_metrics import ModuleMetric, parse

FAMILY = "orchestrator_module_metrics_rejected"


def gauges(count: int) -> tuple[ModuleMetric, ...]:
    defined, rejected = parse(
        [{"name": f"g{i}", "kind": "gauge", "series": [[[], 1]]} for i in range(count)]
    )
    assert rejected == 0
    return defined


def rejected(
    metrics: Mapping[str, tuple[ModuleMetric, ...]], totals: RejectedTotals, key: object
) -> dict[str, float]:
    """Each module's count, as a render of snapshot `key` shows it, with a budget of 10 samples."""
    families = defined_families(metrics, {}, 10, total=lambda levels: totals.count(key, levels))
    (family,) = (f for f in families if f.name == FAMILY)
    return {sample.labels["module"]: sample.value for sample in family.samples}


def test_a_module_that_stops_does_not_lower_anothers_count() -> None:
    totals = RejectedTotals()
    both = {"a": gauges(10), "b": gauges(10)}  # 5 samples each fit, 5 each are left out
    assert rejected(both, totals, 1) == {"a": 5, "b": 5}
    assert rejected(both, totals, 1) == {"a": 5, "b": 5}  # the other format: counted once
    assert rejected(both, totals, 2) == {"a": 5, "b": 5}  # the same level: nothing new
    alone = {"a": gauges(10)}  # b stopped: a's share is all 10
    assert rejected(alone, totals, 3) == {"a": 5, "b": 5}
    assert rejected(both, totals, 4) == {"a": 10, "b": 10}  # cut again: 5 more each


def test_the_endpoints_render_keeps_the_running_total() -> None:
    totals = RejectedTotals()

    def scraped(rejections: dict[str, int]) -> float:
        snap = snapshot(module_metrics_rejected=rejections)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap, totals))
        generate_openmetrics(registry)  # both formats of one snapshot: counted once
        text = generate_latest(registry).decode()
        (family,) = (f for f in text_string_to_metric_families(text) if f.name == FAMILY)
        (sample,) = (s for s in family.samples if s.name == f"{FAMILY}_total")
        return sample.value

    assert scraped({"a": 3}) == 3
    assert scraped({"a": 1}) == 3
    assert scraped({"a": 2}) == 4
