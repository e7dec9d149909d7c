"""What each path of the endpoint answers, from the latest snapshot: `/metrics`, `/status.json`,
`/page.json` and the status page at `/`. Runs in the HTTP thread; each rendering is made once per
snapshot, so a client that hammers the endpoint costs the sending of bytes, not their making."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from orchestrator.metrics.families import SnapshotCollector
from orchestrator.metrics.module_metrics import ModuleMetric, parse
from orchestrator.metrics.sampling import TreeSampler
from orchestrator.metrics.server import Response
from orchestrator.metrics.snapshot import Snapshot

if TYPE_CHECKING:
    from orchestrator.metrics.endpoint import MetricsEndpoint

FRESH_WAIT = 2.0  # seconds a request waits for a fresh snapshot after an idle spell
_FRESH = 1.5  # seconds a snapshot counts as fresh (the loop publishes every second when asked)
_JSON = "application/json"
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
            encoder, content_type = choose_encoder(accept)
            key = f"metrics {content_type}"
            if key not in self._cache:
                self._cache[key] = Response(200, content_type, _render(snapshot, encoder))
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
            parsed[name] = known if known is not None and known[0] is sent else (sent, *parse(sent))
        self._parsed = parsed
        return dataclasses.replace(
            with_samples(snapshot, self._sampler),
            module_metrics={name: entry[1] for name, entry in parsed.items()},
            module_metrics_rejected={name: entry[2] for name, entry in parsed.items() if entry[2]},
        )

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
    modules = [{**row, **samples.get(row.get("pid"), {})} for row in rows]
    return dataclasses.replace(snapshot, status={**snapshot.status, "modules": modules})


def _render(snapshot: Snapshot, encoder: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    ProcessCollector(registry=registry)  # the usual process_* of this (the supervisor's) process
    return encoder(registry)  # type: ignore[no-any-return]


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
