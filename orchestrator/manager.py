"""Module processes from spawn to reap: starting within the limits and after their dependencies,
stopping in dependency order, killing, and the restart policy applied to every exit. Only the
supervisor's loop calls into it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from module_sdk import protocol
from orchestrator.cgroups import ModuleCgroups
from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig, ModuleSpec, Redactor
from orchestrator.exits import after_exit, exit_reason
from orchestrator.forkserver import ForkServer
from orchestrator.output import ModuleLog, OutputReader
from orchestrator.processes import (
    ModuleProcess,
    kill_strays,
    launch_module,
    module_env,
    reap,
    signal_group,
)
from orchestrator.reconcile import ReloadPlan, apply_plan
from orchestrator.resources import Limits, ProcessSampler, memory_reserve_shortfall
from orchestrator.states import ChildState, ExitReason, ExitStatus

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_MEMORY_RECHECK = 1.0  # seconds between checks of a start held back by the memory reserve
_CLOSE_REAP_WAIT = 1.0  # at close, how long a SIGKILLed process may take to be reaped
Publish = Callable[..., None]  # publish(event_type, **data)


class ChildManager:
    """Owns every `ManagedChild` and the processes behind them."""

    def __init__(
        self,
        config: AppConfig,
        limits: Limits,
        *,
        redactor: Redactor,
        cgroups: ModuleCgroups,
        channel_endpoint: str,
        lifeline: int,
        forkserver: ForkServer,
        poller: zmq.Poller,
        publish: Publish,
        foreground: bool,
    ) -> None:
        self.config = config
        self.limits = limits
        self.redactor = redactor
        self.children = {
            spec.name: ManagedChild(
                spec, ModuleLog(spec.name, config.logging, redactor, echo=foreground)
            )
            for spec in config.enabled_modules
        }
        self.by_pid: dict[int, ManagedChild] = {}
        self.sampler = ProcessSampler()
        self.shutting_down = False
        self.shutdown_deadline: float | None = None
        self.publish = publish
        self._foreground = foreground
        self.cgroups = cgroups
        self.forkserver = forkserver
        self._channel_endpoint = channel_endpoint
        self._lifeline = lifeline
        self._poller = poller
        self._readers: dict[int, OutputReader] = {}
        self._exit_handlers: dict[int, Callable[[int], None]] = {}

    def watch_exit(self, pid: int, handler: Callable[[int], None] | None) -> None:
        """Hand the raw wait status of child `pid` (not a module: the broker, the bridge) to
        `handler` when the loop reaps it; None forgets `pid` (its owner reaped it itself)."""
        if handler is None:
            self._exit_handlers.pop(pid, None)
        else:
            self._exit_handlers[pid] = handler

    def any_process(self) -> bool:
        """Whether any module process is still alive (not yet reaped)."""
        return bool(self.by_pid)

    def read_output(self, ready: dict[Any, int]) -> None:
        """Consume the output of every child pipe the poller found readable."""
        for fd in [fd for fd in ready if isinstance(fd, int) and fd in self._readers]:
            if not self._readers[fd].read():
                self._poller.unregister(fd)
                del self._readers[fd]

    def close(self) -> None:
        """Kill whatever is left (normally nothing), reap it, and close the logs."""
        for child in self.children.values():
            if child.pid is not None:
                signal_group(child.pid, signal.SIGKILL)
        # Once a module process is gone, what it left is ours to find: wait for them first.
        deadline = time.monotonic() + _CLOSE_REAP_WAIT
        for pid, child in list(self.by_pid.items()):
            if _reap_one(pid, deadline):
                del self.by_pid[pid]
                if child.process is not None:
                    child.process.reaped(-signal.SIGKILL)
        self.forkserver.close()
        deadline = time.monotonic() + _CLOSE_REAP_WAIT
        for pid in kill_strays(set(self.by_pid) | set(self._exit_handlers)):
            _reap_one(pid, deadline)
        self.cgroups.close()
        for reader in self._readers.values():
            reader.close()
        for child in self.children.values():
            child.log.close()

    # -- starting --------------------------------------------------------------------------------

    def blocked_by(self, child: ManagedChild) -> str | None:
        """Why `child` may not start now, or None."""
        waiting_for = [
            name
            for name in child.spec.depends_on
            if (other := self.children.get(name)) is None or other.state is not ChildState.RUNNING
        ]
        if waiting_for:
            return "waiting for " + ", ".join(waiting_for) + " to run (depends_on)"
        if sum(1 for c in self.children.values() if c.pid is not None) >= self.limits.max_processes:
            return f"process limit reached ({self.limits.max_processes} module processes)"
        return memory_reserve_shortfall(self.config.resources)

    def start(self, child: ManagedChild) -> bool:
        """Spawn the module now (True) unless something holds it back (it then waits)."""
        if self.shutting_down:
            return False
        now = time.monotonic()
        hold = child.breaker.retry_in(now) if child.breaker is not None else 0.0
        if hold > 0:
            child.state, child.deadline = ChildState.BACKOFF, now + hold
            return False
        why = self.blocked_by(child)
        if why is not None:
            if child.why != why:
                log.warning("%s waits: %s", child.name, why)
            child.state, child.why = ChildState.WAITING, why
            child.deadline = now + _MEMORY_RECHECK if why.startswith("available memory") else None
            return False
        child.stop_requested = child.restart_after_stop = False
        child.kill_reason, child.reported_error, child.why = None, "", ""
        child.counters, child.busy_for = {}, 0.0
        try:
            process = self._launch(child)
        except OSError as exc:
            log.error("%s: cannot start a process: %s", child.name, exc)
            child.state = ChildState.STARTING
            after_exit(self, child, ExitStatus(code=127), ExitReason.CRASHED, str(exc))
            return False
        child.process = process
        child.spawns += 1
        child.state = ChildState.STARTING
        child.started_at, child.started_wall = now, time.time()
        child.ready_at = None
        child.deadline = now + child.spec.supervision.start_timeout
        self.by_pid[process.pid] = child
        reader = OutputReader(process.stdout, child.log)
        self._readers[reader.fd] = reader
        self._poller.register(reader.fd, zmq.POLLIN)
        log.info("%s starting (pid %d)", child.name, process.pid)
        return True

    def _launch(self, child: ManagedChild) -> ModuleProcess:
        env = module_env(child.name, self._channel_endpoint, child.spec.env, self._lifeline)
        cgroup = self.cgroups.prepare(child.name)
        if cgroup is not None:
            env[protocol.ENV_CGROUP] = cgroup
        return launch_module(
            child.spec, env, self.config.config_dir.parent, self._lifeline, self.forkserver
        )

    def start_waiting(self) -> None:
        """Start, in config order, every waiting module that nothing holds back any more."""
        for child in self.children.values():
            if child.state is ChildState.WAITING:
                self.start(child)

    def restart(self, child: ManagedChild) -> None:
        """An operator's restart: forget past failures, then stop and start (or just start)."""
        log.info("restart of %s requested", child.name)
        child.consecutive_failures = 0
        child.restart_times.clear()
        if child.breaker is not None:
            child.breaker.reset()
        if child.pid is not None:
            self.stop(child, then_restart=True)
        elif self.start(child):
            child.restarts += 1

    def apply_reload(self, config: AppConfig, plan: ReloadPlan, limits: Limits) -> None:
        """Switch to `config`, touching only the modules `plan` names (see reconcile.apply_plan)."""
        self.config, self.limits = config, limits
        self.redactor.add(config.secrets)
        apply_plan(self, config, plan)
        self.start_waiting()  # a changed dependency or limit may free a waiting module

    def add(self, spec: ModuleSpec) -> ManagedChild:
        """A new module (from a reload), not started yet."""
        log_file = ModuleLog(spec.name, self.config.logging, self.redactor, echo=self._foreground)
        child = self.children[spec.name] = ManagedChild(spec, log_file)
        return child

    # -- stopping --------------------------------------------------------------------------------

    def stop(
        self, child: ManagedChild, *, then_restart: bool = False, timeout: float | None = None
    ) -> None:
        """Ask the module to stop (SIGTERM to its group); SIGKILL follows at the deadline."""
        child.restart_after_stop = then_restart
        if child.pid is None:
            child.state, child.deadline = ChildState.STOPPED, None
            if child.removing:
                self.forget(child)
            elif then_restart:
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
        # As systemd does: a stopped (SIGSTOPped) process would otherwise hold the TERM pending
        # until the SIGKILL, and its shutdown() would never run.
        signal_group(child.pid, signal.SIGCONT)

    def kill(self, child: ManagedChild, reason: ExitReason) -> None:
        """SIGKILL the module's process group now, recording why; its timers stop."""
        if child.pid is None or child.kill_reason is not None:
            return
        child.kill_reason = child.kill_reason or reason
        log.error("%s (pid %d): %s; killing its process group", child.name, child.pid, reason.value)
        signal_group(child.pid, signal.SIGKILL)
        child.deadline = None

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Stop every module, dependents before what they depend on; the loop ends when none is
        left. With `timeout`, whatever still runs after that many seconds is killed."""
        if not self.shutting_down:
            self.shutting_down = True
            self.publish("app.shutdown", name=self.config.app.name)
        if timeout is not None:
            self.shutdown_deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.pid is None:
                child.state, child.deadline = ChildState.STOPPED, None
        self.advance_shutdown()

    def advance_shutdown(self) -> None:
        """Stop each module none of whose dependents has a process any more."""
        if not self.shutting_down:
            return
        now = time.monotonic()
        for child in reversed(list(self.children.values())):
            if child.pid is None or child.state is ChildState.STOPPING:
                continue
            dependents_alive = any(
                other.pid is not None and child.name in other.spec.depends_on
                for other in self.children.values()
            )
            if not dependents_alive:
                remaining = None
                if self.shutdown_deadline is not None:
                    remaining = max(0.0, self.shutdown_deadline - now)
                    remaining = min(remaining, child.spec.supervision.stop_timeout)
                self.stop(child, timeout=remaining)

    # -- what children report ---------------------------------------------------------------------

    def ready(self, child: ManagedChild, *, contained: bool) -> None:
        """The child said ready: `initialize()` returned and its bus is connected; `contained`:
        it joined its cgroup (when it was given one)."""
        if child.state is not ChildState.STARTING or child.kill_reason is not None:
            return  # too late: it is being stopped or killed
        child.uncontained = self.cgroups.available() and not contained
        if child.uncontained:
            log.warning(
                "%s could not join its cgroup; its strays are swept by other means", child.name
            )
        now = time.monotonic()
        child.state, child.ready_at, child.deadline = ChildState.RUNNING, now, None
        child.last_heartbeat = now
        if child.breaker is not None:
            child.breaker.record(started=True)
        log.info(
            "%s running (pid %d, ready in %.0f ms)",
            child.name,
            child.pid,
            (now - child.started_at) * 1000,
        )
        config = self.redactor.redact(dict(child.spec.config))
        self.publish("module.loaded", name=child.name, pid=child.pid, config=config)
        self.start_waiting()

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
            last = child.last_exit
            if last is not None and last.pid == pid and not last.error:
                last.error = error

    # -- exits ------------------------------------------------------------------------------------

    def reap(self) -> None:
        """Reap every exited child; apply the policy to module processes, kill their strays."""
        for pid, raw in reap():
            handler = self._exit_handlers.pop(pid, None)
            if handler is not None:
                handler(raw)
                continue
            child = self.by_pid.pop(pid, None)
            if child is None or child.process is None:
                if pid == self.forkserver.pid:
                    log.warning("the fork server (pid %d) exited; it restarts when needed", pid)
                    self.forkserver.reaped()
                else:
                    log.debug("reaped process %d (a module's stray)", pid)
                continue
            status = ExitStatus.from_wait_status(raw)
            child.process.reaped(status.code if status.code is not None else -(status.signal or 0))
            # Whatever the module left behind: in its group, in its cgroup, or reparented to us.
            signal_group(pid, signal.SIGKILL)
            left = set(self.cgroups.kill(child.name)) | set(kill_strays(self._ours()))
            if left:
                log.warning("%s left %d process(es) behind; killed them", child.name, len(left))
            self.sampler.forget(pid)
            after_exit(self, child, status, exit_reason(child, status), child.reported_error)
        self.advance_shutdown()

    def _ours(self) -> set[int]:
        """The children we started and keep: the live module processes, the fork server and
        those whose exits we watch (the broker). Any other child of ours is a stray of a module
        process that is gone."""
        ours = set(self.by_pid) | set(self._exit_handlers)
        if self.forkserver.pid is not None:
            ours.add(self.forkserver.pid)
        return ours

    def forget(self, child: ManagedChild) -> None:
        """Forget a module that a reload removed, once it has no process."""
        log.info("%s removed", child.name)
        child.log.close()
        if self.children.get(child.name) is child:  # not if a reload brought it back meanwhile
            self.cgroups.remove(child.name)
            del self.children[child.name]

    def settled(self) -> bool:
        """Every module is running, or has failed or been held back at least once since `up`."""
        return all(
            c.state
            in (ChildState.RUNNING, ChildState.FAILED, ChildState.WAITING, ChildState.STOPPED)
            or c.failed_spawn > 0
            for c in self.children.values()
        )


def _reap_one(pid: int, deadline: float) -> bool:
    """Reap `pid`, waiting for it until `deadline` at most; whether it is gone (or not ours)."""
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
