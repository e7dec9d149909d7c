"""The supervisor's timers: restarts that are due, start and stop deadlines, hung and oversized
modules, the announcement that the app has started, and the periodic usage report.
"""

from __future__ import annotations

import logging
import os
import time

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.isolation import GRANTS, polled_memory_limit
from orchestrator.manager import ChildManager
from orchestrator.resources import release_free_memory, system_usage
from orchestrator.states import ChildState, ExitReason

log = logging.getLogger(__name__)

# While modules run, the loop wakes at least every quarter of (heartbeat_timeout -
# heartbeat_interval), within these bounds (seconds): a stall of its own hidden inside a wait it
# was allowed is then too short to make a healthy module look hung, and a longer one is seen.
_WATCH_MAX = 1.0
_WATCH_MIN = 0.05
# Seconds between checks of the modules' memory against their limits: on a timer, not on their
# heartbeats (a module that stops sending them, or allocates in initialize(), is checked too).
MEMORY_CHECK = 1.0


class Health:
    """Checked after every turn of the loop; `next_deadline()` tells the loop when to wake."""

    def __init__(self, manager: ChildManager) -> None:
        self.manager = manager
        self._announced = False
        self._next_usage = time.monotonic() + manager.config.resources.usage_log_interval
        self._next_memory = time.monotonic() + MEMORY_CHECK
        self._last_tick: float | None = None  # monotonic; None until the loop's first tick
        self._waited = 0.0  # seconds the loop waited in the poller, as allowed, since then
        self._watch: float | None = None  # the longest wait allowed while modules run
        self.last_turn = 0.0  # seconds the last turn of the loop took, waiting aside (metrics)

    def next_deadline(self) -> float:
        """The earliest moment `tick()` has something to do."""
        deadlines = [self._next_usage]
        if any(self._limited(child) for child in self.manager.children.values()):
            deadlines.append(self._next_memory)
        self._watch = self._watch_period()
        if self._watch is not None:
            deadlines.append(time.monotonic() + self._watch)
        for child in self.manager.supervised():
            if child.life.kill is not None:
                continue  # SIGKILLed: nothing to wait for but its SIGCHLD
            if child.deadline is not None:
                deadlines.append(child.deadline)
            if child.state is ChildState.RUNNING:
                deadlines.append(child.last_heartbeat + child.spec.supervision.heartbeat_timeout)
        if self.manager.shutdown_deadline is not None:
            deadlines.append(self.manager.shutdown_deadline)
        return min(deadlines)

    def waited(self, seconds: float) -> None:
        """The loop waited `seconds` in the poller within the timeout it asked for: time in which
        it would have read any module's message at once."""
        self._waited += seconds

    def tick(self, now: float) -> None:
        """Act on every timer that is due at `now` (monotonic)."""
        self._check_stall(now)
        GRANTS.refresh(now)  # module users' access to sockets a restarted broker bound anew
        manager = self.manager
        for child in manager.supervised():
            manager.handle(child, lc.Due(now))
            if child.state is ChildState.RUNNING and self._hung(child, now):
                manager.handle(child, lc.HealthFailed(ExitReason.HUNG))
        if manager.shutdown_deadline is not None and now >= manager.shutdown_deadline:
            manager.shutdown_deadline = None
            for child in list(manager.children.values()):
                manager.handle(child, lc.KillRequested(ExitReason.STOPPED))
        if not self._announced and manager.settled():
            self._announced = True
            running = [c.name for c in manager.children.values() if c.state is ChildState.RUNNING]
            app = manager.config.app
            manager.publish(
                "app.started", name=app.name, version=app.version, pid=os.getpid(), modules=running
            )
            release_free_memory()  # what the start freed (config parsing, imports): ~0.5 MB
        if now >= self._next_memory:
            self._next_memory = now + MEMORY_CHECK
            for child in list(manager.children.values()):
                if self._limited(child):
                    self.check_memory(child)
        if now >= self._next_usage:
            self._next_usage = now + manager.config.resources.usage_log_interval
            self.report_usage()
            release_free_memory()

    def _watch_period(self) -> float | None:
        periods = [
            (c.spec.supervision.heartbeat_timeout - c.spec.supervision.heartbeat_interval) / 4
            for c in self.manager.children.values()
            if c.life.kill is None and c.state in (ChildState.RUNNING, ChildState.STARTING)
        ]
        return max(_WATCH_MIN, min([_WATCH_MAX, *periods])) if periods else None

    def _check_stall(self, now: float) -> None:
        """Any time between two ticks that the loop did not spend waiting in the poller is a
        stall of its own (it was stopped, or a turn took long); one longer than the watch period
        is excused."""
        last, waited = self._last_tick, self._waited
        forkserver = self.manager.forkserver
        template, forkserver.waited = forkserver.waited, 0.0  # of it, lost on a stuck template
        self._last_tick, self._waited = now, 0.0
        if last is None:
            return
        stalled = now - last - waited
        self.last_turn = stalled
        if stalled > (self._watch or _WATCH_MAX):
            self.excuse_stall(stalled, now, template)

    def excuse_stall(self, seconds: float, now: float, template: float = 0.0) -> None:
        """The loop did not run for `seconds` (`template` of them waiting for a fork server's
        template that did not answer): the modules' messages waited unread meanwhile, so that
        silence was the supervisor's, not theirs. Each running module gets a fresh heartbeat
        window (a hung one is still caught, one heartbeat_timeout later), and each starting one's
        start deadline moves by `seconds` (at least `transition.START_GRACE` from now)."""
        if template > 0:
            cause = f"{template:.1f}s of it waiting for the fork server's template, now replaced"
        else:
            cause = "it was stopped, or one turn of its loop took that long"
        log.warning(
            "the supervisor stalled for %.1fs (%s); that time does not count against the "
            "modules' heartbeat and start timeouts",
            seconds,
            cause,
        )
        for child in list(self.manager.children.values()):
            self.manager.handle(child, lc.Stalled(now, seconds))

    @staticmethod
    def _hung(child: ManagedChild, now: float) -> bool:
        """No heartbeat for `heartbeat_timeout`, or one callback busy that long."""
        timeout = child.spec.supervision.heartbeat_timeout
        return now - child.last_heartbeat > timeout or child.busy_for > timeout

    def _limited(self, child: ManagedChild) -> bool:
        """Whether `child` has a process whose memory the supervisor polls."""
        return (
            child.pid is not None
            and child.state in (ChildState.STARTING, ChildState.RUNNING)
            and polled_memory_limit(child.spec, self.manager.cgroups, child.cgroup) is not None
        )

    def check_memory(self, child: ManagedChild) -> None:
        """Compare the module's memory (with its descendants) with its `memory_limit_mb`."""
        limit = polled_memory_limit(child.spec, self.manager.cgroups, child.cgroup)
        running = child.state in (ChildState.STARTING, ChildState.RUNNING)
        if limit is None or child.pid is None or not running or child.life.kill is not None:
            return
        child.rss_mb = self.manager.sampler.tree_memory_mb(child.pid, limit)
        if child.rss_mb is not None and child.rss_mb > limit:
            log.error(
                "%s uses %.0f MB, over its memory_limit_mb %d", child.name, child.rss_mb, limit
            )
            self.manager.handle(child, lc.HealthFailed(ExitReason.MEMORY_LIMIT))

    def report_usage(self) -> None:
        """Log machine and per-module usage, and publish it as `resources.usage`."""
        manager = self.manager
        usage = system_usage()
        modules = {
            c.name: manager.sampler.sample(c.pid)
            for c in manager.children.values()
            if c.pid is not None
        }
        log.info(
            "usage: cpu %.1f%%, memory %.1f%%, %d MB available; %s",
            usage["cpu_percent"],
            usage["memory_percent"],
            usage["available_mb"],
            ", ".join(f"{name} {m.get('rss_mb', '?')} MB" for name, m in modules.items())
            or "no modules",
        )
        manager.publish("resources.usage", system=usage, modules=modules)
