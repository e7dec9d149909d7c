"""The supervisor's timers: restarts that are due, start and stop deadlines, hung and oversized
modules, the announcement that the app has started, and the periodic usage report.
"""

from __future__ import annotations

import logging
import os
import time

from module_sdk.process import release_free_memory
from orchestrator.child import ManagedChild
from orchestrator.manager import ChildManager
from orchestrator.resources import system_usage
from orchestrator.states import ChildState, ExitReason

log = logging.getLogger(__name__)


class Health:
    """Checked after every turn of the loop; `next_deadline()` tells the loop when to wake."""

    def __init__(self, manager: ChildManager) -> None:
        self.manager = manager
        self._announced = False
        self._next_usage = time.monotonic() + manager.config.resources.usage_log_interval

    def next_deadline(self) -> float:
        """The earliest moment `tick()` has something to do."""
        deadlines = [self._next_usage]
        for child in self.manager.children.values():
            if child.kill_reason is not None:
                continue  # SIGKILLed: nothing to wait for but its SIGCHLD
            if child.deadline is not None:
                deadlines.append(child.deadline)
            if child.state is ChildState.RUNNING:
                deadlines.append(child.last_heartbeat + child.spec.supervision.heartbeat_timeout)
        if self.manager.shutdown_deadline is not None:
            deadlines.append(self.manager.shutdown_deadline)
        return min(deadlines)

    def tick(self, now: float) -> None:
        manager = self.manager
        for child in manager.children.values():
            if child.kill_reason is not None:
                continue
            due = child.deadline is not None and now >= child.deadline
            if child.state is ChildState.BACKOFF and due:
                child.restarts += 1
                if manager.start(child):
                    manager.publish(
                        "module.restarted", name=child.name, pid=child.pid, restarts=child.restarts
                    )
            elif child.state is ChildState.WAITING and due:
                manager.start(child)  # the memory reserve is re-checked
            elif child.state is ChildState.STARTING and due:
                manager.kill(child, ExitReason.START_TIMEOUT)
            elif child.state is ChildState.STOPPING and due:
                log.error("%s did not stop within its stop timeout", child.name)
                manager.kill(child, ExitReason.STOPPED)
            elif child.state is ChildState.RUNNING and self._hung(child, now):
                manager.kill(child, ExitReason.HUNG)
        if manager.shutdown_deadline is not None and now >= manager.shutdown_deadline:
            manager.shutdown_deadline = None
            for child in manager.children.values():
                manager.kill(child, ExitReason.STOPPED)
        if not self._announced and manager.settled():
            self._announced = True
            running = [c.name for c in manager.children.values() if c.state is ChildState.RUNNING]
            manager.publish(
                "app.started", name=manager.config.app.name, pid=os.getpid(), modules=running
            )
            release_free_memory()  # what the start freed (config parsing, imports): ~0.5 MB
        if now >= self._next_usage:
            self._next_usage = now + manager.config.resources.usage_log_interval
            self.report_usage()
            release_free_memory()

    @staticmethod
    def _hung(child: ManagedChild, now: float) -> bool:
        """No heartbeat for `heartbeat_timeout`, or one callback busy that long."""
        timeout = child.spec.supervision.heartbeat_timeout
        return now - child.last_heartbeat > timeout or child.busy_for > timeout

    def check_memory(self, child: ManagedChild) -> None:
        """Compare the module's memory (with its descendants) with its `memory_limit_mb`."""
        limit = child.spec.supervision.memory_limit_mb
        if limit is None or child.pid is None or child.state is not ChildState.RUNNING:
            return
        child.rss_mb = self.manager.sampler.tree_rss_mb(child.pid)
        if child.rss_mb is not None and child.rss_mb > limit:
            log.error(
                "%s uses %.0f MB, over its memory_limit_mb %d", child.name, child.rss_mb, limit
            )
            self.manager.kill(child, ExitReason.MEMORY_LIMIT)

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
