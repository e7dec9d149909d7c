"""What each path of the endpoint answers, from the latest snapshot: `/metrics`, `/status.json`,
`/page.json` and the status page at `/`. Runs in the HTTP thread; each rendering is made once per
snapshot, so a client that hammers the endpoint costs the sending of bytes, not their making."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from orchestrator.metrics.families import MODULE_COUNTER_KEYS, RejectedTotals, SnapshotCollector
from orchestrator.metrics.module_metrics import ModuleMetric, parse
from orchestrator.metrics.ratelog import RateLimitedLog
from orchestrator.metrics.sampling import TreeSampler
from orchestrator.metrics.server import Response
from orchestrator.metrics.snapshot import Snapshot

if TYPE_CHECKING:
    from orchestrator.metrics.endpoint import MetricsEndpoint

log = logging.getLogger(__name__)

FRESH_WAIT = 2.0  # seconds a request waits for a fresh snapshot after an idle spell
_FRESH = 1.5  # seconds a snapshot counts as fresh (the loop publishes every second when asked)
_JSON = "application/json"
# The two formats served, whatever the client's Accept says (never echoed back).
_TEXT = CONTENT_TYPE_PLAIN_0_0_4
_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
_ENCODERS: dict[str, Callable[[CollectorRegistry], bytes]] = {
    _TEXT: generate_latest,
    _OPENMETRICS: openmetrics.generate_latest,
}
_PAGE = resources.files("orchestrator.metrics").joinpath("page.html").read_bytes()
# The page is self-contained: its own inline script and style, and fetches to this origin only.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
    "X-Frame-Options": "DENY",
}


class Routes:
    """Answers one request from `endpoint.snapshot`."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint
        self._cache: dict[str, Response] = {}
        self._cached_for: Snapshot | None = None
        self._sampled: Snapshot | None = None  # the latest one, with its modules' RSS and CPU
        self._sampler = TreeSampler()
        # module -> (the metrics it sent, checked): parsed again only when it sent new ones
        self._parsed: dict[str, tuple[object, tuple[ModuleMetric, ...], int]] = {}
        self._parse_failed = RateLimitedLog(log)
        self._rejected = RejectedTotals()

    async def route(self, path: str, accept: str) -> Response:
        if path == "/":
            return Response(200, "text/html; charset=utf-8", _PAGE, _PAGE_HEADERS)
        if path not in ("/metrics", "/status.json", "/page.json"):
            return Response(404, "text/plain; charset=utf-8", b"not found: try /metrics or /\n")
        snapshot = await self._fresh()
        if snapshot is None:
            return Response(503, "text/plain; charset=utf-8", b"no snapshot yet\n")
        if snapshot is not self._cached_for:
            self._cache, self._cached_for = {}, snapshot
            self._sampled = self._complete(snapshot)
        snapshot = self._sampled
        assert snapshot is not None
        if path == "/metrics":
            content_type = content_type_for(accept)
            key = f"metrics {content_type}"
            if key not in self._cache:
                body = _render(snapshot, _ENCODERS[content_type], self._rejected)
                self._cache[key] = Response(200, content_type, body)
        else:
            key = path
            if key not in self._cache:
                data = snapshot.status if path == "/status.json" else snapshot.page_data()
                self._cache[key] = Response(200, _JSON, _json(data))
        return self._cache[key]

    def _complete(self, snapshot: Snapshot) -> Snapshot:
        """`snapshot` with what the loop leaves to this thread: each module's RSS and CPU, and
        the metrics the modules sent, checked."""
        parsed = {}
        for name, sent in snapshot.module_metrics_sent.items():
            known = self._parsed.get(name)
            parsed[name] = known if known is not None and known[0] is sent else self._parse(sent)
        self._parsed = parsed
        return dataclasses.replace(
            with_samples(snapshot, self._sampler),
            module_metrics={name: entry[1] for name, entry in parsed.items()},
            module_metrics_rejected={name: entry[2] for name, entry in parsed.items() if entry[2]},
        )

    def _parse(self, sent: object) -> tuple[object, tuple[ModuleMetric, ...], int]:
        """One module's metrics, checked; a payload that trips the checks themselves is rejected
        whole, and costs that module its metrics, not the endpoint its answers."""
        try:
            return (sent, *parse(sent))
        except Exception:
            self._parse_failed(logging.ERROR, "a module's metrics could not be read", exc_info=True)
            return sent, (), 1

    async def _fresh(self) -> Snapshot | None:
        """The latest snapshot; after an idle spell (none published lately), the next one the
        loop publishes now that it knows someone is asking, if it comes within FRESH_WAIT."""
        endpoint = self.endpoint
        endpoint.wanted = time.monotonic()
        snapshot = endpoint.snapshot
        if snapshot is not None and time.monotonic() - snapshot.taken < _FRESH:
            return snapshot
        deadline = time.monotonic() + FRESH_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if endpoint.snapshot is not snapshot:
                return endpoint.snapshot
        return endpoint.snapshot


def with_samples(snapshot: Snapshot, sampler: TreeSampler) -> Snapshot:
    """`snapshot` with each module's `rss_mb` and `cpu_percent` filled in, as `status` shows
    them (the loop leaves them out: sampling is done here, off the loop)."""
    rows = snapshot.status.get("modules", [])
    samples = sampler.sample(row["pid"] for row in rows if isinstance(row.get("pid"), int))
    modules = [{**row, **_counters(row), **samples.get(row.get("pid"), {})} for row in rows]
    return dataclasses.replace(snapshot, status={**snapshot.status, "modules": modules})


def content_type_for(accept: str) -> str:
    """OpenMetrics if the client lists it, else Prometheus' text format 0.0.4."""
    for entry in accept.split(","):
        if entry.split(";", 1)[0].strip().lower() == "application/openmetrics-text":
            return _OPENMETRICS
    return _TEXT


def _counters(row: dict[str, Any]) -> dict[str, Any]:
    """The counters a module's heartbeats carry, as they arrived (anything at all): an int each,
    0 for what is not one."""
    fields: dict[str, Any] = {}
    for key in MODULE_COUNTER_KEYS:
        value = row.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool)
        fields[key] = value if ok else 0
    return fields


def _render(
    snapshot: Snapshot, encoder: Callable[[CollectorRegistry], bytes], rejected: RejectedTotals
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, rejected))
    ProcessCollector(registry=registry)  # the usual process_* of this (the supervisor's) process
    return encoder(registry)


def _json(data: Any) -> bytes:
    try:
        text = json.dumps(data, indent=2, sort_keys=True, default=str)
    except TypeError:  # keys of mixed types cannot be sorted: a peer's row, say
        text = json.dumps(data, indent=2, default=str)
    return (text + "\n").encode()
