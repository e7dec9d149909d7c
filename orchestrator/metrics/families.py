"""The metric families of one snapshot, as `prometheus_client` renders them: the supervisor's,
each module's, the webhooks', and the metrics the modules define themselves."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from orchestrator import __version__
from orchestrator.metrics.module_metrics import MAX_SAMPLES, ModuleMetric, sample_names
from orchestrator.metrics.snapshot import Snapshot
from orchestrator.states import ChildState

_MB = 1024 * 1024
_STATES = tuple(state.value for state in ChildState)
_BREAKER_STATES = ("closed", "open", "half-open")
# (status field, family name, help): the module's counters from its heartbeats.
_MODULE_COUNTERS = (
    ("events_in", "orchestrator_module_events_received", "Events the module's callbacks got."),
    ("events_out", "orchestrator_module_events_published", "Events the module published."),
    ("callback_errors", "orchestrator_module_callback_errors", "Callbacks that raised."),
    ("dropped", "orchestrator_module_dropped_events", "Events the module lost (sequence gaps)."),
    ("bad_frames", "orchestrator_module_bad_frames", "Malformed frames the module discarded."),
    ("retries", "orchestrator_module_retries", "Calls the module's @retry tried again."),
    ("breaker_opens", "orchestrator_module_breaker_opens", "Times a @circuit_breaker opened."),
)
MODULE_COUNTER_KEYS = tuple(key for key, _, _ in _MODULE_COUNTERS)
# (stats field, family name, help) of each webhook.
_WEBHOOK_COUNTERS = (
    ("delivered", "orchestrator_webhook_deliveries", "Notifications delivered."),
    ("failed", "orchestrator_webhook_failures", "Notifications that failed after their retries."),
    ("skipped_open", "orchestrator_webhook_skipped", "Notifications skipped: breaker open."),
    ("dropped", "orchestrator_webhook_dropped", "Notifications dropped: queue full or stopping."),
)


class RejectedTotals:
    """`orchestrator_module_metrics_rejected_total` as a counter must be: never less. What a
    module has left out now is a level, which falls when another module stops (its fair share of
    the samples grows) and rises again when it starts: Prometheus read the fall as a counter reset
    and the rise as new rejections. Each rise is added to the module's total, once per snapshot
    however many formats render it; the totals last as long as the endpoint (the supervisor)."""

    def __init__(self) -> None:
        self._totals: dict[str, int] = {}
        self._levels: Mapping[str, int] = {}
        self._counted: object = None  # the snapshot whose levels were counted last

    def count(self, snapshot: object, levels: Mapping[str, int]) -> dict[str, int]:
        """Each module's total, with what its level in `snapshot` rose by since the last one."""
        if snapshot is not self._counted:
            self._counted = snapshot
            for module, level in levels.items():
                rose = level - self._levels.get(module, 0)
                if rose > 0:
                    self._totals[module] = self._totals.get(module, 0) + rose
            self._levels = dict(levels)
        return self._totals


class SnapshotCollector(Collector):
    """Yields the families of `snapshot`; made for one render. With `rejected`, the count of
    what modules defined and was left out is a running total (else, the snapshot's own)."""

    def __init__(self, snapshot: Snapshot, rejected: RejectedTotals | None = None) -> None:
        self.snapshot = snapshot
        self.rejected = rejected

    def collect(self) -> Iterator[Metric]:
        yield from supervisor_families(self.snapshot)
        yield from module_families(self.snapshot.status.get("modules", []))
        yield from webhook_families(self.snapshot.status.get("webhooks", {}))
        totals = self.rejected
        yield from defined_families(
            self.snapshot.module_metrics,
            self.snapshot.module_metrics_rejected,
            total=None if totals is None else lambda levels: totals.count(self.snapshot, levels),
        )


def supervisor_families(snap: Snapshot) -> Iterator[Metric]:
    """The deployment, the supervisor process and its loop, and its helper processes."""
    info = InfoMetricFamily("orchestrator_app", "The deployment: app.name and app.version.")
    info.add_metric(
        [],
        {"app": snap.app, "version": snap.version, "host": snap.host, "orchestrator": __version__},
    )
    yield info
    supervisor = snap.status.get("supervisor", {})
    yield _gauge(
        "orchestrator_supervisor_start_time_seconds",
        "When the supervisor started (unix time).",
        supervisor.get("started"),
    )
    yield _gauge(
        "orchestrator_supervisor_resident_memory_bytes",
        "The supervisor's own resident memory.",
        snap.supervisor_rss_bytes,
    )
    cpu = CounterMetricFamily(
        "orchestrator_supervisor_cpu_seconds", "CPU time the supervisor used (user + system)."
    )
    cpu.add_metric([], snap.supervisor_cpu_seconds)
    yield cpu
    yield _gauge(
        "orchestrator_loop_lag_seconds",
        "The longest turn of the supervisor's loop (time not spent waiting) in the last second.",
        snap.loop_lag,
    )
    yield _gauge(
        "orchestrator_shutting_down",
        "1 while the supervisor stops.",
        supervisor.get("shutting_down"),
    )
    rejected = snap.status.get("config", {}).get("rejected")
    yield _gauge(
        "orchestrator_config_rejected",
        "1 while the last reload's config was invalid (the running config is kept).",
        rejected is not None,
    )
    yield from _helper_families(snap.status.get("system", []))


def _helper_families(helpers: list[dict[str, Any]]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "orchestrator_helper_up", "1 if the helper process runs.", labels=["helper"]
    )
    restarts = CounterMetricFamily(
        "orchestrator_helper_restarts", "Restarts of the helper process.", labels=["helper"]
    )
    rss = GaugeMetricFamily(
        "orchestrator_helper_resident_memory_bytes", "The helper's memory.", labels=["helper"]
    )
    for row in helpers:
        name = str(row.get("name"))
        up.add_metric([name], 1.0 if row.get("state") == "running" else 0.0)
        restarts.add_metric([name], _number(row.get("restarts")) or 0.0)
        if (mb := _number(row.get("rss_mb"))) is not None:
            rss.add_metric([name], mb * _MB)
    yield from (up, restarts, rss)


def module_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    """One sample per module (label `module`) in each family; a value the module lacks (the RSS
    of a stopped one, say) is left out rather than shown as 0."""
    label = ["module"]
    state = GaugeMetricFamily(
        "orchestrator_module_state",
        "1 for the state the module is in, 0 for the others.",
        labels=["module", "state"],
    )
    restarts = CounterMetricFamily(
        "orchestrator_module_restarts", "Restarts, automatic and requested.", labels=label
    )
    exit_code = GaugeMetricFamily(
        "orchestrator_module_last_exit_code",
        "The exit code of the module's last process (minus the signal number if killed).",
        labels=["module", "reason"],
    )
    exit_time = GaugeMetricFamily(
        "orchestrator_module_last_exit_timestamp_seconds",
        "When the module's last process ended (unix time).",
        labels=label,
    )
    gauges = {
        "uptime": GaugeMetricFamily(
            "orchestrator_module_uptime_seconds", "Age of the current process.", labels=label
        ),
        "started": GaugeMetricFamily(
            "orchestrator_module_start_time_seconds",
            "When the current process started (unix time).",
            labels=label,
        ),
        "rss_mb": GaugeMetricFamily(
            "orchestrator_module_resident_memory_bytes",
            "Resident memory of the module and its descendants.",
            labels=label,
        ),
        "cpu_percent": GaugeMetricFamily(
            "orchestrator_module_cpu_percent",
            "CPU use of the module's process since the previous sample (100 = one core).",
            labels=label,
        ),
        "heartbeat_age": GaugeMetricFamily(
            "orchestrator_module_heartbeat_age_seconds",
            "Time since the module's last heartbeat (running modules only).",
            labels=label,
        ),
        "memory_limit_mb": GaugeMetricFamily(
            "orchestrator_module_memory_limit_bytes", "The module's memory_limit_mb.", labels=label
        ),
    }
    counters = {
        key: CounterMetricFamily(name, text, labels=label) for key, name, text in _MODULE_COUNTERS
    }
    for row in rows:
        name = str(row.get("name"))
        for state_name in _STATES:
            state.add_metric([name, state_name], 1.0 if row.get("state") == state_name else 0.0)
        restarts.add_metric([name], _number(row.get("restarts")) or 0.0)
        last = row.get("last_exit")
        if isinstance(last, dict):
            code = _number(last.get("code"))
            code = -(_number(last.get("signal")) or 0.0) if code is None else code
            exit_code.add_metric([name, str(last.get("reason"))], code)
            exit_time.add_metric([name], _number(last.get("time")) or 0.0)
        for key, gauge in gauges.items():
            value = _number(row.get(key))
            if value is not None:
                scale = _MB if key.endswith("_mb") else 1
                gauge.add_metric([name], value * scale)
        for key, counter in counters.items():
            # The counters come from the module's heartbeats: anything but a number counts as 0.
            counter.add_metric([name], _number(row.get(key)) or 0.0)
    yield from (state, restarts, exit_code, exit_time, *gauges.values(), *counters.values())


def webhook_families(stats: Mapping[str, dict[str, Any]]) -> Iterator[Metric]:
    """Per webhook (label `url`, scrubbed of secrets as `status --json` shows it)."""
    label = ["url"]
    counters = {
        key: CounterMetricFamily(name, text, labels=label) for key, name, text in _WEBHOOK_COUNTERS
    }
    queued = GaugeMetricFamily(
        "orchestrator_webhook_queued", "Notifications waiting to be sent.", labels=label
    )
    breaker = GaugeMetricFamily(
        "orchestrator_webhook_breaker_state",
        "1 for the state the webhook's circuit breaker is in, 0 for the others.",
        labels=["url", "state"],
    )
    for url, row in stats.items():
        for key, family in counters.items():
            family.add_metric([url], _number(row.get(key)) or 0.0)
        queued.add_metric([url], _number(row.get("queued")) or 0.0)
        for value in _BREAKER_STATES:
            breaker.add_metric([url, value], 1.0 if row.get("breaker") == value else 0.0)
    yield from (*counters.values(), queued, breaker)


def defined_families(
    metrics: Mapping[str, tuple[ModuleMetric, ...]],
    rejected: Mapping[str, int],
    budget: int = MAX_SAMPLES,
    total: Callable[[Mapping[str, int]], Mapping[str, int]] | None = None,
) -> Iterator[Metric]:
    """The modules' own metrics, label `module` first. Modules that define the same name share
    one family; one whose kind or labels differ from the first module's, or whose sample names
    clash with another family's (`jobs_total` the gauge and `jobs` the counter), is left out and
    counted as rejected. All modules together render at most `budget` samples, shared fairly:
    the series past a module's share are left out and counted too; `total` turns what each
    module has left out now into what the counter shows (see RejectedTotals)."""
    families: dict[str, tuple[ModuleMetric, Metric]] = {}
    owners: dict[str, str] = {}  # sample name -> the family that emits it
    conflicts: dict[str, int] = dict(rejected)
    shares = fair_shares(
        {m: sum(x.cost(s) for x in d for s in x.series) for m, d in metrics.items()},
        budget,
    )
    for module, defined in sorted(metrics.items()):
        left = shares[module]
        for metric in defined:
            first = families.get(metric.name)
            if first is None:
                names = sample_names(metric.name, metric.kind)
                if not owners.keys().isdisjoint(names):
                    conflicts[module] = conflicts.get(module, 0) + 1
                    continue
                owners.update(dict.fromkeys(names, metric.name))
                families[metric.name] = (metric, _family(metric))
            elif (first[0].kind, first[0].label_names, first[0].buckets) != (
                metric.kind,
                metric.label_names,
                metric.buckets,
            ):
                conflicts[module] = conflicts.get(module, 0) + 1
                continue
            fits = 0
            for series in metric.series:
                if (cost := metric.cost(series)) > left:
                    break
                left, fits = left - cost, fits + 1
            if fits < len(metric.series):
                conflicts[module] = conflicts.get(module, 0) + len(metric.series) - fits
            _add_series(families[metric.name][1], metric, module, fits)
    for _, family in families.values():
        yield family
    dropped = CounterMetricFamily(
        "orchestrator_module_metrics_rejected",
        "Metrics or series a module defined that were left out (malformed, clashing, or over"
        f" the bounds: 100 metrics and 1000 series a module, {budget} samples in all, a sample"
        " counting once more for every 128 bytes of label values).",
        labels=["module"],
    )
    for module, count in sorted((conflicts if total is None else total(conflicts)).items()):
        dropped.add_metric([module], float(count))
    yield dropped


def _family(metric: ModuleMetric) -> Metric:
    labels = ["module", *metric.label_names]
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=labels)
    return HistogramMetricFamily(metric.name, metric.help, labels=labels)


def fair_shares(demands: Mapping[str, int], budget: int) -> dict[str, int]:
    """Split `budget` among the demands: the smallest are met in full, the rest get equal
    shares of what is left (one module at the bounds cannot crowd out the others)."""
    shares, left = {}, budget
    ordered = sorted(demands, key=lambda key: (demands[key], key))
    for index, key in enumerate(ordered):
        shares[key] = min(demands[key], left // (len(ordered) - index))
        left -= shares[key]
    return shares


def _add_series(family: Metric, metric: ModuleMetric, module: str, count: int) -> None:
    for series in metric.series[:count]:
        values = [module, *series.labels]
        if isinstance(family, HistogramMetricFamily):
            bounds = [*(_bound(b) for b in metric.buckets), "+Inf"]
            buckets = list(zip(bounds, series.cumulative, strict=True))
            # A negative sum is no counter (OpenMetrics refuses the scrape): _sum and _count go.
            family.add_metric(values, buckets, series.sum if series.sum >= 0 else None)
        elif isinstance(family, CounterMetricFamily | GaugeMetricFamily):
            family.add_metric(values, series.value)


def _bound(value: float) -> str:
    return repr(value) if value != int(value) else f"{value:.1f}"


def _gauge(name: str, text: str, value: Any) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    if (number := _number(value)) is not None:
        family.add_metric([], number)
    return family


def _number(value: Any) -> float | None:
    """`value` as a float if it is a finite number (a bool is 0 or 1), else None: rows carry
    what modules sent, which may be anything."""
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
