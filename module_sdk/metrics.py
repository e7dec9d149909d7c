"""Metrics a module defines: counters, gauges and histograms. The shim sends them to the
supervisor with its heartbeats (only when they changed), and the supervisor's metrics endpoint
shows them with the label `module="<name>"` (see the README, "Metrics and status page").

    from module_sdk import metrics

    jobs = metrics.counter("jobs_done_total", "Jobs finished.", labels=("kind",))
    jobs.inc(kind="resize")
    depth = metrics.gauge("queue_depth", "Jobs waiting.")
    depth.set(12)
    took = metrics.histogram("job_seconds", "Time per job.", buckets=(0.1, 0.5, 1, 5))
    took.observe(0.3)

Everything is thread-safe. Bounded, so that a module cannot grow the supervisor's memory: at
most 100 metrics and 1000 label sets in all, 8 label names per metric, 30 buckets per histogram,
label values of up to 200 characters. Defining past a bound, an invalid name or a wrong set of
labels, or a value that is not a finite number (NaN, infinity) is a ValueError at the call; a new label set past the 1000th is dropped (and counted in
`dropped_series`, with one warning in the module's log). Names starting with `orchestrator_`,
`process_`, `python_` or `scrape_`, and the names `up`, `ALERTS` and `ALERTS_FOR_STATE` (with a
counter's `_total` and `_created`, a histogram's `_bucket`, `_count`, `_sum` and `_created`) are
the supervisor's or Prometheus's, as are the label names `module`, `le` and `quantile`.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final, TypeVar

from module_sdk.protocol import (
    RESERVED_METRIC_NAMES,
    RESERVED_METRIC_PREFIXES,
    reserved_metric_name,
)

log = logging.getLogger(__name__)

MAX_METRICS: Final = 100
MAX_SERIES: Final = 1000
MAX_LABELS: Final = 8
MAX_BUCKETS: Final = 30
MAX_NAME: Final = 100
MAX_LABEL_VALUE: Final = 200
MAX_HELP: Final = 300
DEFAULT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESEND_EVERY: Final = 10  # heartbeats: unchanged metrics are sent again, in case one was lost
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_LABELS = ("module", "le", "quantile")
_M = TypeVar("_M", bound="_Metric")


class Registry:
    """The metrics of one module process (`module_sdk.metrics` uses one for the whole process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}
        self._samples: dict[
            str, str
        ] = {}  # each name the metrics put in the exposition -> its metric
        self._series = 0
        self._changed = False
        self._unsent = 0  # heartbeats since the metrics were last sent
        self.dropped_series = 0

    def counter(self, name: str, help: str = "", labels: Sequence[str] = ()) -> Counter:
        """A counter (only goes up; a restart of the module starts it again from 0)."""
        return self._define(Counter, name, help, labels, ())

    def gauge(self, name: str, help: str = "", labels: Sequence[str] = ()) -> Gauge:
        """A gauge (set, increased or decreased at will)."""
        return self._define(Gauge, name, help, labels, ())

    def histogram(
        self,
        name: str,
        help: str = "",
        labels: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        """A histogram with these bucket upper bounds (ascending; +Inf is added)."""
        bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        if (
            not 0 < len(bounds) <= MAX_BUCKETS
            or any(math.isnan(b) for b in bounds)  # NaN == NaN for one object in a list
            or list(bounds) != sorted(set(bounds))
        ):
            raise ValueError(f"buckets: expected 1 to {MAX_BUCKETS} ascending distinct bounds")
        return self._define(Histogram, name, help, labels, bounds)

    def _define(
        self,
        kind: type[_M],
        name: str,
        help: str,
        labels: Sequence[str],
        buckets: tuple[float, ...],
    ) -> _M:
        _check_name(name, "metric name")
        samples = _sample_names(kind, name)
        taken = next((sample for sample in samples if reserved_metric_name(sample)), None)
        if taken is not None:
            raise ValueError(
                f"metric name {name!r}: {taken!r} is the supervisor's or Prometheus's (reserved:"
                f" {', '.join(sorted(RESERVED_METRIC_NAMES))} and names starting with"
                f" {', '.join(RESERVED_METRIC_PREFIXES)})"
            )
        if isinstance(labels, str | bytes):  # labels="kind" would be four labels, k, i, n, d
            raise TypeError(f"labels: a sequence of names, like ({labels!r},), not a string")
        label_names = tuple(labels)
        if len(label_names) > MAX_LABELS or len(set(label_names)) != len(label_names):
            raise ValueError(f"labels: expected up to {MAX_LABELS} distinct names")
        for label in label_names:
            _check_name(label, "label name")
            if label in _RESERVED_LABELS:
                raise ValueError(f"label name {label!r} is the supervisor's")
            if label.startswith("__"):
                raise ValueError(f"label name {label!r}: names starting with '__' are Prometheus's")
        with self._lock:
            existing = self._metrics.get(name)
            if existing is not None:
                same = (type(existing), existing.label_names, existing.buckets) == (
                    kind,
                    label_names,
                    buckets,
                )
                if not isinstance(existing, kind) or not same:
                    raise ValueError(f"metric {name!r} is already defined otherwise")
                return existing
            if len(self._metrics) >= MAX_METRICS:
                raise ValueError(f"a module may define at most {MAX_METRICS} metrics")
            clash = next((self._samples[s] for s in samples if s in self._samples), None)
            if clash is not None:
                raise ValueError(f"metric {name!r} would clash with {clash!r} in the exposition")
            metric = kind(self, name, help[:MAX_HELP], label_names, buckets)
            self._metrics[name] = metric
            self._samples.update(dict.fromkeys(samples, name))
            self._changed = True
            return metric

    def _add_series(self) -> bool:
        """Called with the lock held when a metric meets a new label set: whether it may."""
        if self._series >= MAX_SERIES:
            self.dropped_series += 1
            if self.dropped_series == 1:
                log.warning("metrics: over %d label sets; new ones are dropped", MAX_SERIES)
            return False
        self._series += 1
        return True

    def collect(self) -> list[dict[str, Any]]:
        """Every metric in the wire form the supervisor reads."""
        with self._lock:
            return [metric.wire() for metric in self._metrics.values()]

    def heartbeat_fields(self) -> dict[str, Any]:
        """What the shim adds to a heartbeat: `{"metrics": [...]}` when they changed (or every
        RESEND_EVERY heartbeats), else nothing."""
        with self._lock:
            if not self._metrics:
                return {}
            self._unsent += 1
            if not self._changed and self._unsent < RESEND_EVERY:
                return {}
            self._changed, self._unsent = False, 0
            return {"metrics": [metric.wire() for metric in self._metrics.values()]}


class _Metric:
    def __init__(
        self,
        registry: Registry,
        name: str,
        help: str,
        label_names: tuple[str, ...],
        buckets: tuple[float, ...],
    ) -> None:
        self._registry = registry
        self.name = name
        self.help = help
        self.label_names = label_names
        self.buckets = buckets
        self._values: dict[tuple[str, ...], Any] = {}

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            expected = ", ".join(self.label_names) or "no labels"
            raise ValueError(f"{self.name}: expected labels {expected}, got {', '.join(labels)}")
        key = tuple(str(labels[name]) for name in self.label_names)
        if any(len(value) > MAX_LABEL_VALUE for value in key):
            raise ValueError(f"{self.name}: label values are at most {MAX_LABEL_VALUE} characters")
        return key

    def _update(self, labels: dict[str, str], change: Any) -> None:
        key = self._key(labels)
        registry = self._registry
        with registry._lock:
            if key not in self._values:
                if not registry._add_series():
                    return
                self._values[key] = self._initial()
            self._values[key] = change(self._values[key])
            registry._changed = True

    def _initial(self) -> Any:
        return 0.0

    def wire(self) -> dict[str, Any]:
        kind = type(self).__name__.lower()
        series = [[list(key), value] for key, value in self._values.items()]
        labels = list(self.label_names)
        return {
            "name": self.name,
            "kind": kind,
            "help": self.help,
            "labels": labels,
            "series": series,
        }


class Counter(_Metric):
    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` (>= 0, finite) to the series with these labels."""
        number = _finite(self.name, amount)
        if number < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        self._update(labels, lambda value: _finite(self.name, value + number))


class Gauge(_Metric):
    def set(self, value: float, **labels: str) -> None:
        """Set the series with these labels to `value` (finite)."""
        number = _finite(self.name, value)
        self._update(labels, lambda _: number)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        number = _finite(self.name, amount)
        self._update(labels, lambda value: _finite(self.name, value + number))

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        number = _finite(self.name, amount)
        self._update(labels, lambda value: _finite(self.name, value - number))


class Histogram(_Metric):
    def observe(self, value: float, **labels: str) -> None:
        """Count one observation of `value` (finite) in the series with these labels."""
        number = _finite(self.name, value)
        index = bisect.bisect_left(self.buckets, number)

        def add(state: tuple[list[int], float]) -> tuple[list[int], float]:
            counts, total = state
            counts[index] += 1
            return counts, total + number

        self._update(labels, add)

    def _initial(self) -> Any:
        return [0] * (len(self.buckets) + 1), 0.0

    def wire(self) -> dict[str, Any]:
        series = [[list(key), list(counts), total] for key, (counts, total) in self._values.items()]
        return {
            "name": self.name,
            "kind": "histogram",
            "help": self.help,
            "labels": list(self.label_names),
            "buckets": list(self.buckets),
            "series": series,
        }


def _sample_names(kind: type[_Metric], name: str) -> tuple[str, ...]:
    """The names a metric puts in the exposition (as the supervisor renders it)."""
    if kind is Counter:
        base = name.removesuffix("_total")
        return base, f"{base}_total", f"{base}_created"
    if kind is Histogram:
        return name, *(f"{name}_{suffix}" for suffix in ("bucket", "count", "sum", "created"))
    return (name,)


def _finite(name: str, value: float) -> float:
    """`value` as a float; NaN or infinity (which the supervisor would reject, series and all)
    is a ValueError."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return number


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or len(name) > MAX_NAME or _NAME.match(name) is None:
        raise ValueError(
            f"{what} {name!r}: expected up to {MAX_NAME} letters, digits or '_', not starting"
            " with a digit"
        )


REGISTRY: Final = Registry()
"""The process's registry: the one the shim sends."""
counter = REGISTRY.counter
gauge = REGISTRY.gauge
histogram = REGISTRY.histogram
