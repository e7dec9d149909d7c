"""The metrics a module defines through `module_sdk.metrics`, as they arrive on its heartbeats:
checked and cut to fixed bounds, since a module is not trusted with the supervisor's memory.

The wire form (see `module_sdk.metrics`) is a list of
`{"name", "kind", "help", "labels": [names], "series": [...], "buckets": [bounds]}` where a
counter's or gauge's series is `[[label values], value]` and a histogram's
`[[label values], [count per bucket, the last one +Inf], sum]`.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from module_sdk.protocol import reserved_metric_name
from orchestrator.record import record

MAX_METRICS = 100  # per module
MAX_SERIES = 1000  # label sets per module, all its metrics together
# Samples all modules together render (a histogram's label set is one per bucket, plus three):
# what a scrape costs the supervisor's process, whatever the modules send. A sample whose name,
# label names and label values take more than LABEL_BYTES bytes counts as one more per
# LABEL_BYTES: 8 labels of 200 four-byte characters are 6.4 KB a line, and a scrape of 20,000
# of them would be 130 MB.
MAX_SAMPLES = 20_000
LABEL_BYTES = 128
# The child channel's bound on one message (a heartbeat): one at the SDK's bounds, in the worst
# case (label values of 4-byte characters), is under 7 MiB; a bigger one is a hostile module's,
# which ZeroMQ drops (with the connection) before the supervisor's loop reads it.
MAX_CHANNEL_MESSAGE = 16 * 1024 * 1024
# What msgpack may build of one child message, checked as it reads (a heartbeat of a module at
# the SDK's bounds: 100 metrics, 1000 label sets, 8 labels of 200 characters, 31 buckets, and
# an error report's text): a hostile module's 15-million-item list fails at its header instead
# of costing the loop a third of a second.
CHANNEL_LIMITS = {
    "max_items": 200_000,  # all lists and maps together (at the SDK's bounds: about 50,000)
    "max_array_len": 4096,
    "max_map_len": 256,
    "max_str_len": 1024 * 1024,
    "max_bin_len": 64 * 1024,
    "max_ext_len": 0,
}
MAX_LABELS = 8  # label names per metric
MAX_BUCKETS = 30  # per histogram
MAX_NAME = 100
MAX_LABEL_VALUE = 200
MAX_HELP = 300
KINDS = ("counter", "gauge", "histogram")
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Control characters the exposition would carry as they are (a newline is escaped): in a label
# value they cost the series, in a help text they become spaces.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
RESERVED_LABELS = ("module", "le", "quantile")


@record
class Series:
    """One label set of a metric: a value, or a histogram's cumulative buckets and sum."""

    labels: tuple[str, ...]
    value: float = 0.0
    cumulative: tuple[float, ...] = ()  # histograms: one per bound, then +Inf
    sum: float = 0.0
    label_bytes: int = 0  # of its label values, UTF-8


@record
class ModuleMetric:
    """One metric a module defined, checked."""

    name: str
    kind: str
    help: str
    label_names: tuple[str, ...]
    series: tuple[Series, ...]
    buckets: tuple[float, ...] = ()  # histograms: the upper bounds, ascending, without +Inf

    @property
    def samples_per_series(self) -> int:
        """Lines one label set costs in the exposition: a histogram's buckets, +Inf, sum, count."""
        return len(self.buckets) + 3 if self.kind == "histogram" else 1

    def cost(self, series: Series) -> int:
        """What one label set counts against the samples all modules may render: its lines,
        each once more for every LABEL_BYTES of what it repeats (its metric's name and label
        names, and its label values)."""
        names = len(self.name) + sum(len(label) for label in self.label_names)
        return self.samples_per_series * (1 + (names + series.label_bytes) // LABEL_BYTES)


def sample_names(name: str, kind: str) -> frozenset[str]:
    """Every name a family of this kind may put in the exposition (its own, for OpenMetrics'
    family, and each sample's): two families that share one make the exposition invalid."""
    if kind == "counter":
        suffixes: tuple[str, ...] = ("", "_total", "_created")
    elif kind == "histogram":
        suffixes = ("", "_bucket", "_count", "_sum", "_created")
    else:
        suffixes = ("",)
    return frozenset(name + suffix for suffix in suffixes)


def reserved(names: frozenset[str]) -> bool:
    """Whether one of these sample names is the supervisor's or one Prometheus writes itself
    (`module_sdk.protocol.RESERVED_METRIC_NAMES` and `_PREFIXES`)."""
    return any(reserved_metric_name(name) for name in names)


def valid_name(name: object) -> bool:
    """A metric or label name Prometheus accepts, of bounded length."""
    return isinstance(name, str) and len(name) <= MAX_NAME and _NAME.match(name) is not None


def valid_label_name(name: object) -> bool:
    """A label name a module may define: Prometheus keeps those starting with `__` (`__name__`
    would make the whole scrape invalid)."""
    return valid_name(name) and not str(name).startswith("__")


def parse(raw: object) -> tuple[tuple[ModuleMetric, ...], int]:
    """The metrics in a heartbeat's `metrics` field, and how many metrics or series were left
    out (malformed, or over a bound)."""
    if not isinstance(raw, list):
        return (), 1
    metrics: list[ModuleMetric] = []
    rejected = max(0, len(raw) - MAX_METRICS)
    series_left = MAX_SERIES
    seen: set[str] = set()  # every sample name of the metrics kept
    for entry in raw[:MAX_METRICS]:
        metric = _metric(entry, series_left)
        names = sample_names(metric.name, metric.kind) if metric is not None else frozenset()
        if metric is None or not seen.isdisjoint(names):
            rejected += 1
            continue
        seen |= names
        series_left -= len(metric.series)
        declared = len(entry["series"])
        rejected += declared - len(metric.series)
        metrics.append(metric)
    return tuple(metrics), rejected


def _metric(entry: object, series_left: int) -> ModuleMetric | None:
    if not isinstance(entry, dict):
        return None
    name, kind, text = entry.get("name"), entry.get("kind"), entry.get("help", "")
    labels, series = entry.get("labels", []), entry.get("series")
    if not isinstance(name, str) or not valid_name(name) or kind not in KINDS:
        return None
    if not isinstance(text, str) or not isinstance(series, list) or not isinstance(labels, list):
        return None
    # Names before set(): a list among them is unhashable.
    if len(labels) > MAX_LABELS or not all(valid_label_name(label) for label in labels):
        return None
    if len(set(labels)) != len(labels) or any(label in RESERVED_LABELS for label in labels):
        return None
    if name.endswith("_total") and kind == "counter":
        name = name.removesuffix("_total")  # the exposition adds it back
    if reserved(sample_names(name, str(kind))):
        return None
    buckets: tuple[float, ...] = ()
    if kind == "histogram":
        bounds = _buckets(entry.get("buckets"))
        if bounds is None:
            return None
        buckets = bounds
    kept: dict[tuple[str, ...], Series] = {}  # a label set sent twice is kept once
    for item in series[: max(0, series_left)]:
        checked = _series(item, len(labels), buckets if kind == "histogram" else None)
        if checked is not None and (kind != "counter" or checked.value >= 0):
            kept.setdefault(checked.labels, checked)
    text = _CONTROL.sub(" ", text[:MAX_HELP])
    return ModuleMetric(name, str(kind), text, tuple(labels), tuple(kept.values()), buckets)


def _buckets(raw: object) -> tuple[float, ...] | None:
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_BUCKETS:
        return None
    if not all(_finite(bound) for bound in raw):
        return None
    bounds = tuple(float(bound) for bound in raw)
    return bounds if all(a < b for a, b in itertools.pairwise(bounds)) else None


def _series(item: object, labels: int, buckets: tuple[float, ...] | None) -> Series | None:
    if not isinstance(item, list) or len(item) != (2 if buckets is None else 3):
        return None
    values = item[0]
    if not isinstance(values, list) or len(values) != labels:
        return None
    if not all(isinstance(v, str) and len(v) <= MAX_LABEL_VALUE for v in values):
        return None
    if any(_CONTROL.search(v) for v in values):
        return None
    size = sum(len(v.encode(errors="replace")) for v in values)
    if buckets is None:
        return Series(tuple(values), float(item[1]), label_bytes=size) if _finite(item[1]) else None
    counts, total = item[1], item[2]
    if not isinstance(counts, list) or len(counts) != len(buckets) + 1 or not _finite(total):
        return None
    if not all(_finite(count) and count >= 0 for count in counts):
        return None
    running, cumulative = 0.0, []
    for count in counts:
        running += float(count)
        cumulative.append(running)
    return Series(tuple(values), cumulative=tuple(cumulative), sum=float(total), label_bytes=size)


def _finite(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False
