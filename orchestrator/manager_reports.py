"""What module processes report to the supervisor, as the lifecycle sees it: ready (and, then,
a standby for the module's next start), heartbeats with their counters, and errors. A part of
`ChildManager`, whose state it uses."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from module_sdk.health import bounded_message
from module_sdk.protocol import MESSAGE_LIMIT
from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig, Redactor
from orchestrator.forkserver import ForkServer
from orchestrator.handover import Handovers
from orchestrator.standby import Standbys, wanted
from orchestrator.states import ChildState

_STANDBY_DEFER = 3.0  # seconds a module's start holds back the standbys of the others


class ChildReports:
    """The reports of module processes to `ChildManager`."""

    config: AppConfig
    redactor: Redactor
    children: dict[str, ManagedChild]
    by_pid: dict[int, ManagedChild]
    handovers: Handovers
    standbys: Standbys
    forkserver: ForkServer
    standbys_later: set[str]  # modules whose standby waits until no module is starting
    standbys_held: bool  # and until no command waits for its answer (`Replies.quiet`)
    shutting_down: bool

    if TYPE_CHECKING:

        def handle(self, child: ManagedChild, event: lc.Event) -> None: ...
        def _launch_env(self, child: ManagedChild) -> tuple[dict[str, str], Path | None]: ...

    def ready(self, child: ManagedChild, *, contained: bool) -> None:
        """The child said ready: `initialize()` returned and its bus is connected; `contained`:
        it joined its cgroup (when it was given one)."""
        config = self.redactor.redact(dict(child.spec.config))
        self.handle(child, lc.Ready(time.monotonic(), child.pid, contained, config))
        if child.stand_in:
            self.handovers.ready(child)
        else:
            self.keep_standby(child)

    def keep_standby(self, child: ManagedChild) -> None:
        """Make `child` a standby for its next start if it is running and may have one: not
        while a graceful restart of it is under way (its stand-in holds the other cgroup), and
        not while other modules are starting (an `up`: they have the CPU first), nor while a
        command waits for its answer or has just had it (`up -d` printing its table: making
        ten standbys then cost it 80 ms on two cores); see `keep_standbys_later`."""
        if (
            child.state is not ChildState.RUNNING
            or not wanted(child.spec)
            or self.shutting_down
            or self.handovers.busy(child.name)
        ):
            return
        if self._starting() or self.standbys_held:
            self.standbys_later.add(child.name)
            return
        env, python = self._launch_env(child)
        if python is None:  # a venv's python is a new interpreter: no fork to keep ready
            self.standbys.make(child, env, self.config.config_dir.parent)

    def keep_standbys_later(self) -> None:
        """The standbys put off while modules were starting, once none is (the loop asks after
        each turn's replies: `up -d` has its answer first); and, once a template that replaced
        one that died has booted, those that could not be made without it. A template that
        died is started again (in the background) if a running module wants a standby."""
        self.forkserver.revive(
            lambda: any(
                c.state is ChildState.RUNNING
                and wanted(c.spec)
                and self.standbys.pid(c.name) is None
                for c in self.children.values()
            )
        )
        if self.forkserver.became_ready():
            self.standbys_later.update(
                name for name, c in self.children.items() if self.standbys.pid(name) is None
            )
        if self.standbys_later and not self._starting() and not self.standbys_held:
            names, self.standbys_later = self.standbys_later, set()
            for name in names:
                child = self.children.get(name)
                if child is not None:
                    self.keep_standby(child)

    def _starting(self) -> bool:
        """Whether a module started in the last `_STANDBY_DEFER` seconds is still starting (one
        slow to start, or stuck in a start-timeout loop, holds back no one's standby for long)."""
        since = time.monotonic() - _STANDBY_DEFER
        return any(
            c.state is ChildState.STARTING and c.life.started_at > since
            for c in self.children.values()
        )

    def heartbeat(self, child: ManagedChild, message: dict[str, Any]) -> None:
        """Record a heartbeat and the counters it carries."""
        child.last_heartbeat = time.monotonic()
        _take_counters(child, message)
        busy = message.get("busy_for")
        if isinstance(busy, int | float) and math.isfinite(busy):
            child.busy_for = min(max(float(busy), 0.0), 1e9)
        else:
            child.busy_for = 0.0

    def late_heartbeat(self, pid: object, message: dict[str, Any], identity: bytes) -> None:
        """The counters a process sent as it ended (module_sdk's last heartbeat), read after it
        was reaped (the exit and the message came in one turn, the message still on its way):
        they are its module's counters, unless another process of it runs already."""
        for child in self.children.values():
            last = child.last_exit
            if last is not None and last.pid == pid and identity == last.channel_id:
                if child.process is None:
                    _take_counters(child, message)
                return

    def reported_error(self, pid: object, message: dict[str, Any], identity: bytes) -> None:
        """A child's error report, from the process's own routing id (`identity`); one that
        arrives after its process was reaped still belongs to that process's last exit."""
        said = message.get("error")
        said = said[: 2 * MESSAGE_LIMIT] if isinstance(said, str) else ""
        # One printable line: its text goes into app.log and status, where a newline would
        # forge a line of the module's choosing (scrubbed first, so that no secret is cut).
        error = bounded_message(self.redactor.scrub(said))
        child = self.by_pid.get(pid) if isinstance(pid, int) else None
        if child is not None:
            if child.process is not None and identity == child.process.channel_id:
                child.reported_error = error
            return
        for child in self.children.values():
            last = child.last_exit
            if last is not None and last.pid == pid and identity == last.channel_id:
                last.error = error or last.error  # its own report, over its last words


# What a heartbeat's `counters` may hold (module_sdk.bus counters, and module_sdk.resilience's).
COUNTERS = (
    "events_in",
    "events_out",
    "callback_errors",
    "bad_frames",
    "dropped",
    "retries",
    "breaker_opens",
)
_MAX_COUNT = 2**53  # beyond it, no count of events a module could have made


def _take_counters(child: ManagedChild, message: dict[str, Any]) -> None:
    counters = message.get("counters")
    if isinstance(counters, dict):
        # Only the counters status shows, each a count: what else a module sends would reach
        # `status --json` (bytes it cannot encode, NaN) and the table (escapes).
        child.counters = {key: _count(counters.get(key)) for key in COUNTERS}


def _count(value: object) -> int:
    """A counter as sent: a non-negative int (clamped), else 0."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0
    return min(max(value, 0), _MAX_COUNT)
