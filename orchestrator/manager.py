"""Module processes from spawn to reap: starting within the limits, stopping, killing, and the
restart policy applied to every exit. Only the supervisor's loop calls into it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import zmq

from module_sdk import protocol
from orchestrator.child import LastExit, ManagedChild
from orchestrator.config import AppConfig, Redactor
from orchestrator.output import ModuleLog, OutputReader
from orchestrator.processes import reap, signal_group, spawn_module
from orchestrator.resources import Limits, ProcessSampler, system_usage
from orchestrator.states import (
    Action,
    ChildState,
    ExitReason,
    ExitStatus,
    decide_after_exit,
)

log = logging.getLogger(__name__)

_SHIM_EXIT_REASONS = {
    protocol.EXIT_LOAD_FAILED: ExitReason.LOAD_FAILED,
    protocol.EXIT_INIT_FAILED: ExitReason.INIT_FAILED,
}
Publish = Callable[..., None]  # publish(event_type, **data)


class ChildManager:
    """Owns every `ManagedChild` and the processes behind them."""

    def __init__(
        self,
        config: AppConfig,
        limits: Limits,
        channel_endpoint: str,
        poller: zmq.Poller,
        publish: Publish,
        *,
        foreground: bool,
    ) -> None:
        self.config = config
        self.limits = limits
        self.redactor = Redactor(config.secrets)
        self.children = {
            spec.name: ManagedChild(
                spec, ModuleLog(spec.name, config.logging, self.redactor, echo=foreground)
            )
            for spec in config.enabled_modules
        }
        self.by_pid: dict[int, ManagedChild] = {}
        self.sampler = ProcessSampler()
        self.shutting_down = False
        self.shutdown_deadline: float | None = None
        self._channel_endpoint = channel_endpoint
        self._poller = poller
        self._publish = publish
        self._readers: dict[int, OutputReader] = {}
        self._announced = False
        self._next_usage = time.monotonic() + config.resources.usage_log_interval

    def any_process(self) -> bool:
        """Whether any module process is still alive (not yet reaped)."""
        return bool(self.by_pid)

    def next_deadline(self) -> float:
        """The earliest moment `tick()` has something to do."""
        deadlines = [self._next_usage]
        for child in self.children.values():
            if child.deadline is not None:
                deadlines.append(child.deadline)
            if child.state is ChildState.RUNNING:
                deadlines.append(child.last_heartbeat + child.spec.supervision.heartbeat_timeout)
        if self.shutdown_deadline is not None:
            deadlines.append(self.shutdown_deadline)
        return min(deadlines)

    def read_output(self, ready: dict[Any, int]) -> None:
        """Consume the output of every child pipe the poller found readable."""
        for fd in [fd for fd in ready if isinstance(fd, int) and fd in self._readers]:
            if not self._readers[fd].read():
                self._poller.unregister(fd)
                del self._readers[fd]

    def close(self) -> None:
        """SIGKILL whatever is left (only after an error in the loop) and close the logs."""
        for child in self.children.values():
            if child.pid is not None:
                signal_group(child.pid, signal.SIGKILL)
        for reader in self._readers.values():
            reader.close()
        for child in self.children.values():
            child.log.close()

    # -- starting and stopping -------------------------------------------------------------------

    def live_processes(self) -> int:
        return sum(1 for c in self.children.values() if c.pid is not None)

    def start(self, child: ManagedChild) -> bool:
        """Spawn the module now if the process limit allows (True), else leave it waiting."""
        if self.shutting_down:
            return False
        if self.live_processes() >= self.limits.max_processes:
            child.state, child.deadline = ChildState.WAITING, None
            child.why = f"process limit reached ({self.limits.max_processes} module processes)"
            log.warning("%s waits: %s", child.name, child.why)
            return False
        child.stop_requested = child.restart_after_stop = False
        child.kill_reason, child.reported_error, child.why = None, "", ""
        child.counters = {}
        try:
            child.popen = spawn_module(
                child.name,
                self._channel_endpoint,
                self.config.config_dir.parent,
                child.spec.env,
            )
        except OSError as exc:
            log.error("%s: cannot start a process: %s", child.name, exc)
            self._after_exit(child, ExitStatus(code=127), ExitReason.CRASHED, str(exc))
            return False
        child.spawns += 1
        child.state = ChildState.STARTING
        child.started_at, child.started_wall = time.monotonic(), time.time()
        child.ready_at = None
        child.deadline = child.started_at + child.spec.supervision.start_timeout
        self.by_pid[child.popen.pid] = child
        assert child.popen.stdout is not None
        reader = OutputReader(child.popen.stdout, child.log)  # type: ignore[arg-type]
        child.popen.stdout = None  # the reader owns the pipe now
        self._readers[reader.fd] = reader
        self._poller.register(reader.fd, zmq.POLLIN)
        log.info("%s starting (pid %d)", child.name, child.popen.pid)
        return True

    def stop(
        self, child: ManagedChild, *, then_restart: bool = False, timeout: float | None = None
    ) -> None:
        """Ask the module to stop (SIGTERM to its group); SIGKILL follows at the deadline."""
        child.restart_after_stop = then_restart
        if child.pid is None:
            child.state, child.deadline = ChildState.STOPPED, None
            if then_restart:
                self.start(child)
            return
        if child.state is ChildState.STOPPING:
            return
        child.stop_requested = True
        child.state = ChildState.STOPPING
        grace = child.spec.supervision.stop_timeout if timeout is None else timeout
        child.deadline = time.monotonic() + grace
        log.info("%s stopping (pid %d, SIGTERM, up to %gs)", child.name, child.pid, grace)
        signal_group(child.pid, signal.SIGTERM)

    def kill(self, child: ManagedChild, reason: ExitReason) -> None:
        """SIGKILL the module's process group now, recording why."""
        if child.pid is None:
            return
        child.kill_reason = child.kill_reason or reason
        log.error("%s (pid %d): %s; killing its process group", child.name, child.pid, reason.value)
        signal_group(child.pid, signal.SIGKILL)
        child.deadline = None

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Stop every module, in reverse start order; the loop ends when none is left."""
        if not self.shutting_down:
            self.shutting_down = True
            self._publish("app.shutdown", name=self.config.app.name)
        if timeout is not None:
            self.shutdown_deadline = time.monotonic() + timeout
        for child in reversed(list(self.children.values())):
            if child.pid is None:
                child.state, child.deadline = ChildState.STOPPED, None
            else:
                remaining = (
                    None if timeout is None else min(timeout, child.spec.supervision.stop_timeout)
                )
                self.stop(child, timeout=remaining)

    # -- what children report ---------------------------------------------------------------------

    def heartbeat(self, child: ManagedChild, message: dict[str, Any]) -> None:
        """Record a heartbeat and the counters it carries."""
        child.last_heartbeat = time.monotonic()
        counters = message.get("counters")
        if isinstance(counters, dict):
            child.counters = counters
        busy = message.get("busy_for")
        child.busy_for = float(busy) if isinstance(busy, int | float) else 0.0

    def reported_error(self, pid: object, message: dict[str, Any]) -> None:
        """A child's error report; one that arrives after its process was reaped still belongs to
        that process's last exit."""
        error = self.redactor.scrub(str(message.get("error", "")))
        child = self.by_pid.get(pid) if isinstance(pid, int) else None
        if child is not None:
            child.reported_error = error
            return
        for child in self.children.values():
            if (
                child.last_exit is not None
                and child.last_exit.pid == pid
                and not child.last_exit.error
            ):
                child.last_exit.error = error

    def ready(self, child: ManagedChild) -> None:
        if child.state is not ChildState.STARTING:
            return
        now = time.monotonic()
        child.state, child.ready_at, child.deadline = ChildState.RUNNING, now, None
        child.last_heartbeat = now
        log.info(
            "%s running (pid %d, ready in %.0f ms)",
            child.name,
            child.pid,
            (now - child.started_at) * 1000,
        )
        self._publish("module.loaded", name=child.name, pid=child.pid)

    def reap(self) -> None:
        for pid, raw in reap():
            child = self.by_pid.pop(pid, None)
            if child is None or child.popen is None:
                log.debug("reaped unknown process %d", pid)
                continue
            status = ExitStatus.from_wait_status(raw)
            child.popen.returncode = (
                status.code if status.code is not None else -(status.signal or 0)
            )
            signal_group(pid, signal.SIGKILL)  # anything the module left behind in its group
            self.sampler.forget(pid)
            self._after_exit(child, status, self._exit_reason(child, status), child.reported_error)

    @staticmethod
    def _exit_reason(child: ManagedChild, status: ExitStatus) -> ExitReason:
        if child.kill_reason is not None:
            return child.kill_reason
        if child.stop_requested:
            return ExitReason.STOPPED
        if status.code in _SHIM_EXIT_REASONS:
            return _SHIM_EXIT_REASONS[status.code]
        return ExitReason.EXITED if status.code == 0 else ExitReason.CRASHED

    def _after_exit(
        self, child: ManagedChild, status: ExitStatus, reason: ExitReason, error: str
    ) -> None:
        now = time.monotonic()
        ran_stably = (
            child.ready_at is not None
            and now - child.ready_at >= child.spec.supervision.stable_after
        )
        if child.state is ChildState.STARTING:
            child.failed_spawn = child.spawns
        child.last_exit = LastExit(status, reason, time.time(), error, child.pid)
        child.popen = None
        child.ready_at = None
        level = logging.INFO if not reason.is_failure else logging.ERROR
        detail = f": {error}" if error else ""
        log.log(level, "%s exited (%s, %s)%s", child.name, status.describe(), reason.value, detail)
        if reason.is_failure:
            self._publish(
                "module.error",
                name=child.name,
                error=error or reason.value,
                reason=reason.value,
                exit_code=status.code,
                signal=status.signal,
            )
        self._publish("module.unloaded", name=child.name)
        if child.restart_after_stop and not self.shutting_down:
            child.restarts += 1
            child.consecutive_failures = 0
            self.start(child)
            self._start_waiting()
            return
        if reason.is_failure:
            child.consecutive_failures = 1 if ran_stably else child.consecutive_failures + 1
        else:
            child.consecutive_failures = 0
        decision = decide_after_exit(
            child.spec.supervision,
            reason,
            stop_requested=child.stop_requested or self.shutting_down,
            consecutive_failures=child.consecutive_failures,
            recent_restarts=tuple(child.restart_times),
            now=now,
        )
        child.state, child.why = decision.state, decision.why
        child.deadline = now + decision.delay if decision.action is Action.RESTART else None
        if decision.action is Action.RESTART:
            child.restart_times.append(now)
            log.info("%s restarts in %.2fs", child.name, decision.delay)
        elif decision.action is Action.FAIL:
            log.error(
                "%s failed: %s; it stays down until `orchestrator restart %s`",
                child.name,
                decision.why,
                child.name,
            )
            self._publish("module.failed", name=child.name, reason=decision.why)
        self._start_waiting()

    def _start_waiting(self) -> None:
        for child in self.children.values():
            if (
                child.state is ChildState.WAITING
                and self.live_processes() < self.limits.max_processes
            ):
                self.start(child)

    # -- timers -----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for child in self.children.values():
            settings = child.spec.supervision
            if (
                child.state is ChildState.BACKOFF
                and child.deadline is not None
                and now >= child.deadline
            ):
                child.restarts += 1
                if self.start(child):
                    self._publish(
                        "module.restarted", name=child.name, pid=child.pid, restarts=child.restarts
                    )
            elif (
                child.state is ChildState.STARTING
                and child.deadline is not None
                and now >= child.deadline
            ):
                self.kill(child, ExitReason.START_TIMEOUT)
            elif (
                child.state is ChildState.STOPPING
                and child.deadline is not None
                and now >= child.deadline
            ):
                log.error("%s did not stop within its stop timeout", child.name)
                self.kill(child, ExitReason.STOPPED)
            elif child.state is ChildState.RUNNING and (
                now - child.last_heartbeat > settings.heartbeat_timeout
                or child.busy_for > settings.heartbeat_timeout
            ):
                self.kill(child, ExitReason.HUNG)
        if self.shutdown_deadline is not None and now >= self.shutdown_deadline:
            for child in self.children.values():
                if child.pid is not None and child.kill_reason is None:
                    self.kill(child, ExitReason.STOPPED)
        if not self._announced and self.settled():
            self._announced = True
            running = [c.name for c in self.children.values() if c.state is ChildState.RUNNING]
            self._publish(
                "app.started", name=self.config.app.name, pid=os.getpid(), modules=running
            )
        if now >= self._next_usage:
            self._next_usage = now + self.config.resources.usage_log_interval
            self._log_usage()

    def settled(self) -> bool:
        """Every module is running, or has failed or been held back at least once since `up`."""
        return all(
            c.state
            in (ChildState.RUNNING, ChildState.FAILED, ChildState.WAITING, ChildState.STOPPED)
            or c.failed_spawn > 0
            for c in self.children.values()
        )

    def _log_usage(self) -> None:
        usage = system_usage()
        modules = {
            c.name: self.sampler.sample(c.pid) for c in self.children.values() if c.pid is not None
        }
        log.info(
            "usage: cpu %.1f%%, memory %.1f%%, %d MB available; %s",
            usage["cpu_percent"],
            usage["memory_percent"],
            usage["available_mb"],
            ", ".join(f"{name} {m.get('rss_mb', '?')} MB" for name, m in modules.items())
            or "no modules",
        )
        self._publish("resources.usage", system=usage, modules=modules)
