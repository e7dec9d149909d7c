"""Names Prometheus writes itself (`up`, `scrape_*`, `ALERTS`) are refused like the supervisor's:
a module's `up{module="x"} 0` made the usual `up == 0` alert fire for a healthy target."""

from __future__ import annotations

import pytest

from module_sdk.metrics import Registry
from orchestrator.metrics.module_metrics import parse

PROMETHEUS_NAMES = (
    ("up", "gauge"),
    ("up_total", "counter"),  # the exposition's family `up`
    ("up", "histogram"),
    ("scrape_samples_scraped", "gauge"),
    ("scrape_duration_seconds", "histogram"),
    ("ALERTS", "gauge"),
    ("ALERTS_FOR_STATE", "counter"),
)


@pytest.mark.parametrize(("name", "kind"), PROMETHEUS_NAMES)
def test_the_sdk_refuses_names_prometheus_writes_itself(name: str, kind: str) -> None:
    define = getattr(Registry(), kind)
    with pytest.raises(ValueError, match=f"metric name '{name}': .* Prometheus's"):
        define(name)


@pytest.mark.parametrize(("name", "kind"), PROMETHEUS_NAMES)
def test_the_supervisor_leaves_them_out_and_counts_them(name: str, kind: str) -> None:
    entry: dict[str, object] = {"name": name, "kind": kind, "labels": [], "series": []}
    if kind == "histogram":
        entry["buckets"] = [1]
    assert parse([entry, {"name": "kept", "kind": "gauge", "series": [[[], 1]]}])[1] == 1


def test_names_that_only_look_alike_are_a_modules() -> None:
    registry = Registry()
    for name in ("uptime_seconds", "upstream", "alerts", "scraped_pages", "my_up"):
        registry.gauge(name)
    entries = [{"name": n, "kind": "gauge", "series": []} for n in ("uptime", "scrapes", "Up")]
    defined, rejected = parse(entries)
    assert rejected == 0 and [m.name for m in defined] == ["uptime", "scrapes", "Up"]
