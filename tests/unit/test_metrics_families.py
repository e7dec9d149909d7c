"""The metric families of a snapshot, rendered by prometheus_client and parsed back; the modules'
own metrics from the SDK's registry through the supervisor's checks."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from module_sdk.metrics import Registry
from orchestrator.metrics import module_metrics
from orchestrator.metrics.families import SnapshotCollector, fair_shares
from orchestrator.metrics.module_metrics import parse
from orchestrator.metrics.snapshot import EventRing, Snapshot

ROW = {
    "name": "worker",
    "state": "running",
    "restarts": 3,
    "last_exit": {"code": None, "signal": 9, "reason": "hung", "time": 1700000000.0},
    "uptime": 12.5,
    "started": 1700000100.0,
    "rss_mb": 20.0,
    "cpu_percent": 1.5,
    "heartbeat_age": 0.2,
    "memory_limit_mb": None,
    "events_in": 7,
    "events_out": 5,
    "callback_errors": 1,
    "dropped": 2,
    "bad_frames": 4,
}
STOPPED = {"name": "idle", "state": "failed", "restarts": 0, "last_exit": None}


def snapshot(**extra: Any) -> Snapshot:
    status = {
        "supervisor": {"pid": 1, "started": 1700000000.0, "shutting_down": False},
        "system": [{"name": "broker", "state": "running", "restarts": 1, "rss_mb": 10.0}],
        "config": {"rejected": None},
        "modules": [ROW, STOPPED],
        "webhooks": {
            "https://hooks.example/***": {
                "delivered": 4,
                "failed": 1,
                "skipped_open": 0,
                "dropped": 0,
                "queued": 2,
                "breaker": "open",
            }
        },
    }
    fields: dict[str, Any] = {
        "taken": 0.0,
        "time": 0.0,
        "app": "shop",
        "version": "2.1",
        "host": "h1",
        "status": status,
        "loop_lag": 0.004,
        "supervisor_rss_bytes": 30_000_000,
        "supervisor_cpu_seconds": 1.25,
    }
    return Snapshot(**{**fields, **extra})


def scrape(snap: Snapshot) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> {sorted labels: value}, from the text format as Prometheus parses it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_supervisor_module_and_webhook_families() -> None:
    got = scrape(snapshot())
    app = {"app": "shop", "version": "2.1", "host": "h1", "orchestrator": "0.1.0"}
    assert got["orchestrator_app_info"] == {tuple(sorted(app.items())): 1.0}
    assert got["orchestrator_supervisor_resident_memory_bytes"] == {(): 30_000_000}
    assert got["orchestrator_supervisor_cpu_seconds_total"] == {(): 1.25}
    assert got["orchestrator_loop_lag_seconds"] == {(): 0.004}
    assert got["orchestrator_helper_up"] == {(("helper", "broker"),): 1.0}
    worker = (("module", "worker"),)
    state = got["orchestrator_module_state"]
    assert state[(("module", "worker"), ("state", "running"))] == 1.0
    assert state[(("module", "worker"), ("state", "backoff"))] == 0.0
    assert state[(("module", "idle"), ("state", "failed"))] == 1.0
    assert sum(state.values()) == 2  # one state each
    assert got["orchestrator_module_restarts_total"][worker] == 3
    assert got["orchestrator_module_last_exit_code"] == {
        (("module", "worker"), ("reason", "hung")): -9
    }
    assert got["orchestrator_module_resident_memory_bytes"] == {worker: 20 * 1024 * 1024}
    assert got["orchestrator_module_heartbeat_age_seconds"] == {worker: 0.2}
    assert got["orchestrator_module_uptime_seconds"] == {worker: 12.5}  # none for the failed one
    for name, value in (
        ("events_received", 7),
        ("events_published", 5),
        ("callback_errors", 1),
        ("dropped_events", 2),
        ("bad_frames", 4),
    ):
        assert got[f"orchestrator_module_{name}_total"][worker] == value, name
    url = ("url", "https://hooks.example/***")
    assert got["orchestrator_webhook_deliveries_total"] == {(url,): 4}
    assert got["orchestrator_webhook_failures_total"] == {(url,): 1}
    assert got["orchestrator_webhook_queued"] == {(url,): 2}
    breaker = got["orchestrator_webhook_breaker_state"]
    assert breaker[(("state", "open"), url)] == 1.0 and sum(breaker.values()) == 1


def test_module_metrics_from_the_sdk_to_the_exposition() -> None:
    registry = Registry()
    jobs = registry.counter("jobs_done_total", "Jobs finished.", labels=("kind",))
    jobs.inc(kind="resize")
    jobs.inc(2, kind="crop")
    registry.gauge("queue_depth", "Jobs waiting.").set(12)
    took = registry.histogram("job_seconds", "Time per job.", buckets=(0.1, 1))
    for value in (0.05, 0.1, 0.5, 3):
        took.observe(value)
    fields = registry.heartbeat_fields()
    defined, rejected = parse(fields["metrics"])
    assert rejected == 0
    other, _ = parse(Registry().heartbeat_fields().get("metrics", []))
    got = scrape(snapshot(module_metrics={"worker": defined, "idle": other}))
    assert got["jobs_done_total"] == {
        (("kind", "resize"), ("module", "worker")): 1,
        (("kind", "crop"), ("module", "worker")): 2,
    }
    assert got["queue_depth"] == {(("module", "worker"),): 12}
    buckets = got["job_seconds_bucket"]
    assert [buckets[(("le", le), ("module", "worker"))] for le in ("0.1", "1.0", "+Inf")] == [
        2,
        3,
        4,
    ]
    assert got["job_seconds_sum"] == {(("module", "worker"),): pytest.approx(3.65)}
    assert got["job_seconds_count"] == {(("module", "worker"),): 4}
    assert registry.heartbeat_fields() == {}  # unchanged: not sent again at once


def test_the_openmetrics_format_parses_too() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot()))
    names = {family.name for family in parse_om(generate_openmetrics(registry).decode())}
    assert {
        "orchestrator_app",
        "orchestrator_module_restarts",
        "orchestrator_loop_lag_seconds",
    } <= names


def test_the_sdk_refuses_what_the_supervisor_would() -> None:
    registry = Registry()
    for bad in ("1x", "a-b", "orchestrator_x", "x" * 101):
        with pytest.raises(ValueError):
            registry.counter(bad)
    for label in ("module", "__name__", "__x"):
        with pytest.raises(ValueError):
            registry.gauge("g", labels=(label,))
    counter = registry.counter("c", labels=("k",))
    assert registry.counter("c", labels=("k",)) is counter
    with pytest.raises(ValueError):
        registry.gauge("c")
    with pytest.raises(ValueError):
        counter.inc(k="x" * 201)
    with pytest.raises(ValueError):
        counter.inc(other="x")
    with pytest.raises(ValueError):
        counter.inc(-1, k="x")
    for index in range(module_metrics.MAX_METRICS - 1):
        registry.gauge(f"g{index}")
    with pytest.raises(ValueError):
        registry.gauge("one_too_many")


def test_the_sdk_drops_label_sets_past_its_bound() -> None:
    registry = Registry()
    counter = registry.counter("hits", labels=("user",))
    for index in range(module_metrics.MAX_SERIES + 5):
        counter.inc(user=str(index))
    assert registry.dropped_series == 5
    assert len(registry.collect()[0]["series"]) == module_metrics.MAX_SERIES


def test_the_supervisor_bounds_what_a_module_sends() -> None:
    """A module that does not use the SDK (or a hostile one) is cut to the same bounds."""
    many = [
        {"name": f"m{i}", "kind": "gauge", "help": "", "labels": [], "series": [[[], 1]]}
        for i in range(module_metrics.MAX_METRICS + 10)
    ]
    defined, rejected = parse(many)
    assert len(defined) == module_metrics.MAX_METRICS and rejected == 10
    wide = {
        "name": "wide",
        "kind": "counter",
        "labels": ["k"],
        "series": [[[str(i)], 1] for i in range(module_metrics.MAX_SERIES + 1)],
    }
    defined, rejected = parse([wide])
    assert len(defined[0].series) == module_metrics.MAX_SERIES and rejected == 1
    bad = [
        "not a mapping",
        {"name": "orchestrator_up", "kind": "gauge", "series": []},
        {"name": "x", "kind": "summary", "series": []},
        {"name": "x y", "kind": "gauge", "series": []},
        {"name": "lbl", "kind": "gauge", "labels": ["le"], "series": []},
        {"name": "h", "kind": "histogram", "buckets": [2, 1], "series": []},
    ]
    defined, rejected = parse(bad)
    assert defined == () and rejected == len(bad)
    series = [[["a"], float("nan")], [["a", "b"], 1], [["x" * 201], 1], [["ok"], 2]]
    defined, rejected = parse([{"name": "g", "kind": "gauge", "labels": ["k"], "series": series}])
    assert [s.labels for s in defined[0].series] == [("ok",)] and rejected == 3
    assert parse("garbage") == ((), 1)


def test_conflicting_definitions_across_modules_keep_the_first() -> None:
    a, _ = parse([{"name": "shared", "kind": "gauge", "labels": [], "series": [[[], 1]]}])
    b, _ = parse([{"name": "shared", "kind": "counter", "labels": [], "series": [[[], 2]]}])
    got = scrape(snapshot(module_metrics={"a": a, "b": b}))
    assert got["shared"] == {(("module", "a"),): 1}
    assert got["orchestrator_module_metrics_rejected_total"] == {(("module", "b"),): 1}


def test_the_event_ring_keeps_the_last_events_cut_short() -> None:
    ring = EventRing(size=3)
    for index in range(5):
        ring.record("module.error", {"name": f"m{index}", "error": "x" * 1000})
    recent = ring.recent()
    assert [event.name for event in recent] == ["m2", "m3", "m4"]
    assert all(len(event.data) <= 300 for event in recent)


def test_malformed_label_names_are_rejected_not_raised() -> None:
    """Unhashable label names once made `parse` raise, and every later scrape a 500."""
    for labels in ([[1]], [{}], ["ok", ["x"]], "ab"):
        entry = {"name": "a", "kind": "gauge", "labels": labels, "series": []}
        assert parse([entry]) == ((), 1), labels


def test_clashing_sample_names_are_rejected_within_and_across_modules() -> None:
    """Every name a family puts in the exposition counts: the counter `jobs` is `jobs_total`
    too, a histogram `h` is `h_bucket`, `h_count` and `h_sum`; `process_*` and `python_*` are
    the supervisor's (its ProcessCollector)."""
    own = [
        {"name": "jobs", "kind": "counter", "labels": [], "series": [[[], 1]]},
        {"name": "jobs_total", "kind": "gauge", "labels": [], "series": [[[], 2]]},
        {"name": "process_open_fds", "kind": "gauge", "labels": [], "series": [[[], 1]]},
        {"name": "process", "kind": "counter", "labels": [], "series": [[[], 1]]},
        {"name": "python_info", "kind": "gauge", "labels": [], "series": [[[], 1]]},
        {"name": "lat", "kind": "histogram", "buckets": [1], "series": [[[], [1, 0], 0.5]]},
        {"name": "lat_count", "kind": "gauge", "labels": [], "series": [[[], 1]]},
    ]
    mine, rejected = parse(own)
    assert [m.name for m in mine] == ["jobs", "lat"] and rejected == 5
    theirs, _ = parse(
        [
            {"name": "jobs_created", "kind": "gauge", "labels": [], "series": [[[], 3]]},
            {"name": "lat_sum", "kind": "counter", "labels": [], "series": [[[], 3]]},
            {"name": "fine", "kind": "gauge", "labels": [], "series": [[[], 4]]},
        ]
    )
    snap = snapshot(module_metrics={"a": mine, "b": theirs}, module_metrics_rejected={"a": 5})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    ProcessCollector(registry=registry)
    families = {f.name: f for f in parse_om(generate_openmetrics(registry).decode())}  # valid
    assert {"jobs", "lat", "fine"} <= families.keys() and "jobs_created" not in families
    rejected_family = families["orchestrator_module_metrics_rejected"]
    got = {s.labels["module"]: s.value for s in rejected_family.samples if s.name.endswith("total")}
    assert got == {"a": 5, "b": 2}


def test_all_modules_together_render_a_bounded_number_of_samples() -> None:
    """A histogram's label set renders a line per bucket: the bound counts lines, in all modules,
    and a module at the per-module bounds cannot crowd out the others."""
    wide = {
        "name": "wide",
        "kind": "histogram",
        "labels": ["k"],
        "buckets": list(range(1, module_metrics.MAX_BUCKETS + 1)),
        "series": [
            [[str(i)], [1] * (module_metrics.MAX_BUCKETS + 1), 1.0]
            for i in range(module_metrics.MAX_SERIES)
        ],
    }
    big, rejected = parse([wide])
    assert rejected == 0 and len(big[0].series) == module_metrics.MAX_SERIES
    small, _ = parse([{"name": "small", "kind": "gauge", "labels": [], "series": [[[], 1]]}])
    got = scrape(snapshot(module_metrics={"big": big, "other": big, "tiny": small}))
    lines = sum(len(got[name]) for name in ("wide_bucket", "wide_count", "wide_sum"))
    assert module_metrics.MAX_SAMPLES - 33 < lines <= module_metrics.MAX_SAMPLES
    assert got["small"] == {(("module", "tiny"),): 1}
    per_module = {
        m: sum(1 for k in got["wide_count"] if ("module", m) in k) for m in ("big", "other")
    }
    assert per_module["big"] == per_module["other"]  # fair shares
    dropped = got["orchestrator_module_metrics_rejected_total"]
    assert dropped[(("module", "big"),)] == module_metrics.MAX_SERIES - per_module["big"]


def test_fair_shares() -> None:
    assert fair_shares({"a": 10, "b": 100, "c": 100}, 90) == {"a": 10, "b": 40, "c": 40}
    assert fair_shares({"a": 1, "b": 2}, 100) == {"a": 1, "b": 2}
    assert fair_shares({}, 10) == {}


def test_rows_with_junk_counters_still_render() -> None:
    """The module counters come from its heartbeats, unchecked by the loop."""
    junk = {**ROW, "events_in": "x", "events_out": {1: 0, "a": 1}, "restarts": float("nan")}
    got = scrape(snapshot(status={"modules": [junk]}))
    worker = (("module", "worker"),)
    assert got["orchestrator_module_events_received_total"] == {worker: 0}
    assert got["orchestrator_module_events_published_total"] == {worker: 0}
    assert got["orchestrator_module_restarts_total"] == {worker: 0}


def test_the_sdk_refuses_non_finite_values_and_clashing_names() -> None:
    registry = Registry()
    counter = registry.counter("c_total")
    gauge = registry.gauge("g")
    took = registry.histogram("h", buckets=(1,))
    for call in (
        lambda: counter.inc(float("inf")),
        lambda: counter.inc(float("nan")),
        lambda: gauge.set(float("nan")),
        lambda: gauge.inc(float("-inf")),
        lambda: took.observe(float("nan")),
        lambda: took.observe(float("inf")),
    ):
        with pytest.raises(ValueError, match="finite"):
            call()
    gauge.set(1e308)
    with pytest.raises(ValueError, match="finite"):
        gauge.inc(1e308)  # overflows
    assert registry.collect()[1]["series"] == [[[], 1e308]]
    for name, define in (
        ("c_created", registry.gauge),  # the counter's c_created
        ("h_bucket", registry.gauge),
        ("c", registry.counter),  # the same samples as c_total
        ("process_cpu", registry.gauge),
        ("python", registry.histogram),
        ("process", registry.counter),  # process_total
    ):
        with pytest.raises(ValueError):
            define(name)
    registry.counter("processed")  # a prefix of a word is not the prefix


def render_both(defined: dict[str, Any]) -> tuple[str, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot(module_metrics=defined)))
    return generate_latest(registry).decode(), generate_openmetrics(registry).decode()


def test_wide_label_values_count_against_the_bound_by_their_bytes() -> None:
    """8 labels of 200 four-byte characters are 6.4 KB a line: counted by lines alone, 1000 such
    histograms rendered 116 MB and lagged the supervisor's loop by a second."""
    labels = [f"l{i}" for i in range(8)]
    bomb = {
        "name": "bomb",
        "kind": "histogram",
        "labels": labels,
        "buckets": list(range(1, module_metrics.MAX_BUCKETS + 1)),
        "series": [
            [["😀" * 196 + str(s)] * 8, [1] * (module_metrics.MAX_BUCKETS + 1), 1.0]
            for s in range(module_metrics.MAX_SERIES)
        ],
    }
    defined, rejected = parse([bomb])
    assert rejected == 0  # within every per-module bound: it is the render that is bounded
    text, _ = render_both({"bomb": defined})
    assert len(text.encode()) < 12 * 1024 * 1024
    kept = len(text_string_to_metric_families(text).__next__().samples)
    assert kept > 0


def test_long_names_count_against_the_bound_too() -> None:
    """A 100-character name and 8 label names of 100 repeat on every line as much as values."""
    names = [f"{'n' * 98}{i}" for i in range(8)]
    histograms = [
        {
            "name": f"{'h' * 95}{m:03}",
            "kind": "histogram",
            "labels": names,
            "buckets": list(range(1, module_metrics.MAX_BUCKETS + 1)),
            "series": [
                [[f"{s:015}"] * 8, [1] * (module_metrics.MAX_BUCKETS + 1), 1.0] for s in range(10)
            ],
        }
        for m in range(module_metrics.MAX_METRICS)
    ]
    defined, rejected = parse(histograms)
    assert rejected == 0
    text, _ = render_both({"wide": defined})
    assert len(text.encode()) < 12 * 1024 * 1024


def test_what_would_make_a_scrape_invalid_is_left_out() -> None:
    raw = [
        {"name": "a", "kind": "gauge", "labels": ["__name__"], "series": [[["up"], 1]]},
        {"name": "b", "kind": "gauge", "labels": ["__x"], "series": [[["v"], 1]]},
        {"name": "c", "kind": "counter", "labels": ["k"], "series": [[["x"], -5], [["y"], 2]]},
        {"name": "d", "kind": "gauge", "labels": ["k"], "series": [[["x"], 1], [["x"], 2]]},
        {"name": "e", "kind": "gauge", "labels": ["k"], "series": [[["a\rb"], 1], [["n\nl"], 3]]},
        {"name": "f", "kind": "gauge", "help": "one\r\x00two", "series": [[[], 1]]},
        {"name": "h", "kind": "histogram", "buckets": [1], "series": [[[], [1, 0], -5.0]]},
    ]
    defined, rejected = parse(raw)
    by_name = {metric.name: metric for metric in defined}
    assert sorted(by_name) == ["c", "d", "e", "f", "h"] and rejected == 2 + 1 + 1 + 1
    assert [s.labels for s in by_name["c"].series] == [("y",)]  # a counter is never negative
    assert [s.value for s in by_name["d"].series] == [1]  # a label set once
    assert [s.labels for s in by_name["e"].series] == [("n\nl",)]  # a newline is escaped
    assert by_name["f"].help == "one  two"
    text, openmetrics = render_both({"m": defined})
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"c", "d", "e", "f", "h"} <= names
    assert {family.name for family in parse_om(openmetrics)} >= {"c", "d", "e", "f", "h"}


def test_labels_given_as_one_string_are_refused() -> None:
    # labels="kind" made four labels, k, i, n and d.
    with pytest.raises(TypeError, match=r"not a string"):
        Registry().counter("jobs_total", "Jobs.", labels="kind")


def test_a_nan_bucket_is_refused_where_it_is_defined() -> None:
    # Accepted by the SDK (a list holding one NaN object equals its sorted copy), refused later
    # by the supervisor, far from the mistake.
    with pytest.raises(ValueError, match="ascending distinct bounds"):
        Registry().histogram("job_seconds", "Time.", buckets=(float("nan"),))
