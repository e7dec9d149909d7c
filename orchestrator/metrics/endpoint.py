"""The supervisor's side of the metrics endpoint: it publishes a snapshot at most once a second
(only while someone is scraping), keeps the recent built-in events and the modules' own metrics,
and owns the HTTP thread that serves them."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import psutil

from orchestrator.config import AppConfig
from orchestrator.metrics.snapshot import EventRing, Snapshot

if TYPE_CHECKING:
    from orchestrator.metrics.server import HttpServer

log = logging.getLogger(__name__)

PUBLISH_INTERVAL = 1.0  # seconds between snapshots while scraped
DEMAND_WINDOW = 60.0  # seconds after the last request during which snapshots are kept fresh
CLUSTER_INTERVAL = 5.0  # seconds between two requests for the cluster's view (cluster mode)
MAX_HOSTS = 64  # rows of the cluster's view kept for the page
# Asks the bridge for the cluster's view: a waiter (called until it returns the reply), or a
# failed reply at once (`Forwarder.forward`).
Waiter = Callable[[], dict[str, Any] | None]
ClusterView = Callable[[], Waiter | dict[str, Any]]


class MetricsEndpoint:
    """Does nothing unless `metrics.listen` is set. Every method but `snapshot`/`wanted` runs on
    the supervisor's loop; the HTTP thread only reads `snapshot` and sets `wanted`."""

    def __init__(
        self,
        config: AppConfig,
        *,
        status: Callable[[], dict[str, Any]],
        loop_lag: Callable[[], float],
        cluster: ClusterView | None = None,
    ) -> None:
        self.section = config.metrics
        host = config.cluster.host if config.cluster is not None else socket.gethostname()
        self._app = (config.app.name, config.app.version, host)
        self._status = status
        self._loop_lag = loop_lag
        self._cluster = cluster if config.cluster is not None else None
        self._cluster_waiter: Waiter | None = None
        self._next_cluster = 0.0
        self._hosts: tuple[Mapping[str, Any], ...] | None = None
        self._lag = 0.0
        self._events = EventRing()
        # module -> (the pid of the process that sent them, its metrics as sent, unchecked)
        self._defined: dict[str, tuple[object, object]] = {}
        self._next = 0.0
        self._process = psutil.Process(os.getpid())
        self._server: HttpServer | None = None
        self.snapshot: Snapshot | None = None  # replaced whole, never changed: the thread reads it
        self.wanted = 0.0  # monotonic time of the last request (written by the HTTP thread)

    @property
    def enabled(self) -> bool:
        return self.section.listen is not None

    def start(self) -> str | None:
        """Listen, if enabled; the reason it cannot (a port in use), or None."""
        if not self.enabled:
            return None
        # Imported here: asyncio and prometheus_client cost a supervisor without metrics ~8 MB.
        from orchestrator.metrics.routes import Routes  # noqa: PLC0415
        from orchestrator.metrics.server import HttpServer  # noqa: PLC0415

        host, port = self.section.host, self.section.port
        try:
            sock = HttpServer.listen(host, port)
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            message = f"metrics.listen {host}:{port}: cannot listen: {why}"
            log.error("the supervisor cannot start: %s", message)
            return message
        hosts = None if self.section.allow_remote else HttpServer.local_hosts(sock)
        self._server = HttpServer(sock, Routes(self).route, hosts=hosts)
        self._server.start()
        log.info("metrics and status page on %s", self.url())
        return None

    def url(self) -> str | None:
        """Where it listens (the port picked, for port 0), or None when off."""
        if self._server is None:
            return None
        host, port = self._server.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def status(self) -> dict[str, Any]:
        """Its part of `status --json`."""
        return {"url": self.url()}

    def next_deadline(self) -> float | None:
        """When the loop must wake to publish (None: nothing to do)."""
        return self._next if self._server is not None else None

    def tick(self, now: float) -> None:
        """After every turn of the loop: note its lag; publish a snapshot when one is due."""
        if self._server is None:
            return
        self._lag = max(self._lag, self._loop_lag())
        if self._cluster_waiter is not None:
            self._cluster_reply(self._cluster_waiter())
        if now < self._next:
            return
        self._next = now + PUBLISH_INTERVAL
        if now - self.wanted >= DEMAND_WINDOW:
            self._lag = 0.0  # the lag shown is that of the last second, not of a quiet spell
        else:
            self._publish(now)
            self._ask_cluster(now)

    def _ask_cluster(self, now: float) -> None:
        """In cluster mode, every CLUSTER_INTERVAL while scraped: ask the bridge for the other
        hosts (the answer comes on a later turn)."""
        if self._cluster is None or self._cluster_waiter is not None or now < self._next_cluster:
            return
        self._next_cluster = now + CLUSTER_INTERVAL
        asked = self._cluster()
        if callable(asked):
            self._cluster_waiter = asked
        else:
            self._cluster_reply(asked)

    def _cluster_reply(self, reply: dict[str, Any] | None) -> None:
        """Keep the other hosts' rows from the bridge's answer (None: not yet); a failure (the
        bridge restarting, say) keeps the rows of the last answer, whose states say how old."""
        if reply is None:
            return
        self._cluster_waiter = None
        data = reply.get("data") if reply.get("ok") else None
        hosts = data.get("hosts") if isinstance(data, dict) else None
        if isinstance(hosts, list):
            self._hosts = tuple(row for row in hosts[:MAX_HOSTS] if isinstance(row, dict))

    def record(self, event_type: str, data: Mapping[str, Any]) -> None:
        """A built-in event was published: keep it for the status page."""
        if self.enabled:
            self._events.record(event_type, data)

    def heartbeat(self, name: str, message: Mapping[str, Any]) -> None:
        """A module's heartbeat: keep the metrics it defined, when it sent them (only changes
        are sent), until the process that sent them ends."""
        raw = message.get("metrics")
        if raw is None or not self.enabled:
            return
        # Checked by the HTTP thread: a large set costs milliseconds.
        self._defined[name] = (message.get("pid"), raw)

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _publish(self, now: float) -> None:
        status = self._status()
        pids = {row["name"]: row.get("pid") for row in status["modules"]}
        for name, (pid, _) in list(self._defined.items()):
            # Removed by a reload, or its process ended: a new one (which may define none, and
            # then sends none) starts from nothing.
            if name not in pids or pids[name] != pid:
                del self._defined[name]
        try:
            rss = self._process.memory_info().rss
            times = self._process.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            rss, cpu = 0, 0.0
        app, version, host = self._app
        self.snapshot = Snapshot(
            taken=now,
            time=time.time(),
            app=app,
            version=version,
            host=host,
            status=status,
            loop_lag=round(self._lag, 6),
            supervisor_rss_bytes=rss,
            supervisor_cpu_seconds=cpu,
            events=self._events.recent(),
            module_metrics_sent={name: raw for name, (_, raw) in self._defined.items()},
            hosts=self._hosts,
        )
        self._lag = 0.0
