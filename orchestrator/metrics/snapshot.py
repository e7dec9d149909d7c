"""What the HTTP side may read: an immutable picture of the supervisor, published by its loop."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from orchestrator import __version__
from orchestrator.metrics.module_metrics import ModuleMetric
from orchestrator.record import record

_EVENTS_KEPT = 50  # recent built-in events the status page shows
_EVENT_TEXT_MAX = 300  # characters of an event's data kept for the page


@record
class RecentEvent:
    """One built-in event the supervisor published, as the status page lists it."""

    time: float  # unix
    type: str
    name: str  # the module it is about, or ""
    data: str  # its data as JSON, cut

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "type": self.type, "name": self.name, "data": self.data}


class EventRing:
    """The last few built-in events; written by the loop, copied into each snapshot."""

    def __init__(self, size: int = _EVENTS_KEPT) -> None:
        self._events: deque[RecentEvent] = deque(maxlen=size)

    def record(self, event_type: str, data: Mapping[str, Any]) -> None:
        name = data.get("name")
        text = json.dumps(data, default=str, sort_keys=True)
        if len(text) > _EVENT_TEXT_MAX:
            text = text[: _EVENT_TEXT_MAX - 3] + "..."
        self._events.append(
            RecentEvent(time.time(), event_type, name if isinstance(name, str) else "", text)
        )

    def recent(self) -> tuple[RecentEvent, ...]:
        return tuple(self._events)


@record
class Snapshot:
    """Everything one scrape or page load shows. Built by the loop, never changed after: the HTTP
    thread reads it without a lock (publishing is one reference assignment)."""

    taken: float  # monotonic
    time: float  # unix
    app: str
    version: str
    host: str
    status: Mapping[str, Any]  # exactly what `status --json` prints
    loop_lag: float  # seconds: the longest turn of the loop since the previous snapshot
    supervisor_rss_bytes: int
    supervisor_cpu_seconds: float
    events: tuple[RecentEvent, ...] = ()
    module_metrics_sent: Mapping[str, object] = field(default_factory=dict)  # as modules sent them
    # Filled in by the HTTP thread (`routes.complete`): checked, and what was left out.
    module_metrics: Mapping[str, tuple[ModuleMetric, ...]] = field(default_factory=dict)
    module_metrics_rejected: Mapping[str, int] = field(default_factory=dict)
    hosts: tuple[Mapping[str, Any], ...] | None = None  # cluster mode: the other hosts' rows

    def page_data(self) -> dict[str, Any]:
        """What the status page adds to `/status.json`: the other hosts (in cluster mode, as
        `status --cluster --json` shows them) and the recent events, newest first."""
        return {
            "app": self.app,
            "orchestrator": __version__,
            "version": self.version,
            "host": self.host,
            "time": self.time,
            "loop_lag": self.loop_lag,
            "hosts": list(self.hosts) if self.hosts is not None else None,
            "events": [event.as_dict() for event in reversed(self.events)],
        }
