"""The modules under supervision: each one's lifecycle event goes through the one transition
function (`orchestrator.transition`), whose effects are carried out here (spawn, signal, publish,
log, the start breaker); what holds a start back (dependencies, limits) and the shutdown order
are found here too. Only the supervisor's loop calls into it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import zmq

from module_sdk import protocol
from module_sdk.health import bounded_message
from module_sdk.protocol import MESSAGE_LIMIT
from orchestrator import lifecycle as lc
from orchestrator.cgroups import ModuleCgroups
from orchestrator.child import LastExit, ManagedChild
from orchestrator.config import AppConfig, Redactor
from orchestrator.dependents import (
    dependents,
    must_drain,
    pool_remains,
    stoppable,
    waiting_for,
)
from orchestrator.forkserver import ForkServer
from orchestrator.handover import NEXT_CGROUP, Handovers
from orchestrator.manager_reports import ChildReports
from orchestrator.manager_requests import ModuleRequests
from orchestrator.manager_spawns import ModuleSpawns, carried, jitter
from orchestrator.module_processes import ModuleProcesses
from orchestrator.output import ModuleLog
from orchestrator.processes import signal_module, signal_process
from orchestrator.resources import Limits, ProcessSampler, memory_reserve_shortfall
from orchestrator.spec import handshake_timeout
from orchestrator.standby import SPARE_CGROUP, Standbys
from orchestrator.states import ChildState, ExitReason
from orchestrator.transition import transition
from orchestrator.venv import Environments

if TYPE_CHECKING:
    from orchestrator.breaker import StartBreaker

log = logging.getLogger(__name__)

Publish = Callable[..., None]  # publish(event_type, **data)
_NOT_COMING_BACK = (ChildState.STOPPED, ChildState.FAILED, ChildState.DONE)
BROKER_DOWN = "the broker is down or not answering"
_SETUP_FAILURES = (1, protocol.EXIT_LOAD_FAILED, protocol.EXIT_BUS_FAILED)  # shim exits
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")  # a module log line's
_SHIM_LINE = re.compile(r"^[A-Z]+ module_sdk\.shim: ")  # a line of the shim's own logger


class ChildManager(ModuleSpawns, ModuleRequests, ChildReports):
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
            for spec in config.enabled_instances
        }
        self.sampler = ProcessSampler()
        self.processes = ModuleProcesses(
            cgroups=cgroups, forkserver=forkserver, poller=poller, sampler=self.sampler
        )
        self.by_pid = self.processes.by_pid  # the live module processes
        # When the broker last became ready; None while it is down after having run (set by
        # the supervisor; before the broker's first start, handshakes simply wait for it).
        self.bus_up_since: Callable[[], float | None] = lambda: 0.0
        self.shutting_down = False
        self.shutdown_deadline: float | None = None
        self.publish = publish
        self._foreground = foreground
        self.cgroups = cgroups
        self.forkserver = forkserver
        self._channel_endpoint = channel_endpoint
        self._lifeline = lifeline
        self.watch_exit = self.processes.watch_exit
        self.read_output = self.processes.read_output
        self.handovers = Handovers(self.handle, self.by_pid, publish)
        self.standbys = Standbys(forkserver=forkserver, cgroups=cgroups, watch_exit=self.watch_exit)
        self.standbys_later: set[str] = set()
        self.standbys_held = False  # a command waits for its answer (the supervisor says)
        # Modules with their own dependencies: their venvs, built off the loop.
        self.venvs = Environments(
            config.config_dir.parent,
            config.modules_file,
            self.watch_exit,
            self.start_waiting,
            scrub=redactor.scrub,
        )

    def any_process(self) -> bool:
        """Whether any module process is still alive (not yet reaped)."""
        return bool(self.by_pid)

    def close(self) -> None:
        """Kill whatever is left (normally nothing), reap it, and close the logs."""
        self.venvs.close()
        self.standbys.close()  # first: the processes' sweep spares what it is told is ours
        self.processes.close([*self.children.values(), *self.handovers.stand_ins()])

    def supervised(self) -> list[ManagedChild]:
        """Every module, and the stand-ins of graceful restarts under way (their timers run)."""
        return [*self.children.values(), *self.handovers.stand_ins()]

    # -- the lifecycle ---------------------------------------------------------------------------

    def handle(self, child: ManagedChild, event: lc.Event) -> None:
        """Move `child` by `event` and carry out the effects of the transition, in order."""
        step = transition(child.life, event, child.spec.supervision)
        child.life = step.life
        for effect in step.effects:
            self._carry_out(child, effect)
        if child.life.state in _NOT_COMING_BACK and not child.stand_in:
            self.standbys.drop(child.name)  # until someone starts it: no standby meanwhile
        if not child.stand_in:
            self.handovers.check(child)  # its old process left: a graceful restart's new one too

    def _carry_out(self, child: ManagedChild, effect: lc.Effect) -> None:
        match effect:
            case lc.Log():
                args = [child.name, *(_fill(child, arg) for arg in effect.args)]
                log.log(effect.level, effect.message, *args)
            case lc.Publish() if not (child.stand_in and effect.event_type == "module.unloaded"):
                self.publish(effect.event_type, name=child.name, **effect.data)
            case lc.Signal() if child.process is not None:
                if effect.term:
                    signal_process(child.process, signal.SIGTERM)
                    signal_module(child.process, signal.SIGCONT)
                else:
                    signal_module(child.process, signal.SIGKILL)
            case lc.TryStart():
                start = lc.StartRequested(time.monotonic(), self._gate(child), **carried(effect))
                self.handle(child, start)
            case lc.Spawn():
                self._spawn(child, effect)
            case lc.RecordExit():
                child.last_exit = LastExit(
                    effect.status,
                    effect.reason,
                    time.time(),
                    effect.error,
                    child.pid,
                    child.process.channel_id if child.process is not None else b"",
                )
                child.history.append(child.last_exit)
                child.process = None
            case lc.RecordStart():
                if not effect.started:
                    self._breaker(child).record(started=False)
                elif child.breaker is not None:
                    child.breaker.record(started=True)
            case lc.AskBreaker():
                now, breaker = time.monotonic(), child.breaker
                hold = breaker.retry_in(now) if breaker is not None else 0.0
                failures = breaker.failures if breaker is not None else 0
                self.handle(child, lc.BreakerHold(now, hold, failures))
            case lc.ResetBreaker():
                if child.breaker is not None:
                    child.breaker.reset()
            case lc.Running():
                child.last_heartbeat = effect.now
                if effect.contained is not None:
                    self._contained(child, effect.contained)
            case lc.Forget():
                self.forget(child)
            case lc.WakeWaiting():
                self.start_waiting()
            case lc.DependentsFollow() if not (self.shutting_down or child.stand_in):
                self._follow(child)

    def _gate(self, child: ManagedChild) -> lc.Gate:
        """What holds a start of `child` back now."""
        if self.shutting_down:
            return lc.Gate(shutting_down=True)
        breaker = child.breaker
        hold = breaker.retry_in(time.monotonic()) if breaker is not None else 0.0
        if breaker is not None and hold > 0:
            return lc.Gate(hold=hold, failures=breaker.failures)
        venv = self.venvs.prepare(child.spec)  # its own dependencies: a build may be under way
        if venv.failed is not None:
            return lc.Gate(failed=venv.failed)
        return lc.Gate(blocked=self.blocked_by(child) or venv.waiting)

    def _breaker(self, child: ManagedChild) -> StartBreaker:
        if child.breaker is None:
            # Imported at the first failed start: most supervisors never need pybreaker.
            from orchestrator.breaker import StartBreaker  # noqa: PLC0415

            errors = self.config.error_handling
            child.breaker = StartBreaker(
                child.name, errors.circuit_breaker_fail_max, errors.circuit_breaker_reset_timeout
            )
        return child.breaker

    def _contained(self, child: ManagedChild, contained: bool) -> None:
        child.uncontained = self.cgroups.available() and not contained
        if child.uncontained:
            log.warning(
                "%s could not join its cgroup; its strays are swept by other means", child.name
            )

    # -- starting --------------------------------------------------------------------------------

    def blocked_by(self, child: ManagedChild) -> str | None:
        """Why `child` may not start now, or None."""
        left_over = self.handovers.left_over(child)
        if left_over is not None:  # a graceful restart's new process, stopping: not two at once
            return f"waiting for its previous process (pid {left_over}) to stop"
        waiting = waiting_for(child, self.children)
        if waiting is not None:
            return waiting
        if self.bus_up_since() is None:
            return BROKER_DOWN
        processes = sum(1 for c in self.children.values() if c.pid is not None) + self.starting()
        if processes >= self.limits.process_limit(len(self.children))[0]:
            return self.limits.reached(len(self.children))
        return memory_reserve_shortfall(self.config.resources)

    def start(self, child: ManagedChild, *, scheduled: bool = False) -> bool:
        """Spawn the module now (True) unless something holds it back (it then waits). A
        scheduled module starts only when its schedule (`scheduled`) says."""
        if child.spec.schedule is not None and not scheduled:
            return False
        spawns = child.spawns
        start = lc.StartRequested(time.monotonic(), self._gate(child), scheduled=scheduled)
        self.handle(child, start)
        return child.spawns > spawns or self.deferred(child)

    def start_waiting(self) -> None:
        """Start, in config order, every waiting module that nothing holds back any more."""
        with self.starting_together():
            for child in list(self.children.values()):
                if child.state is ChildState.WAITING:
                    self.handle(child, lc.DependencyChanged(time.monotonic(), self._gate(child)))

    def _follow(self, dependency: ManagedChild) -> None:
        """`dependency` stopped running: each module depending on it follows its edge's policy.
        Not when it finished its work (`done`), nor for an instance that a scale down removes or
        while another instance of its module still runs: a pool that shrinks is still there."""
        if dependency.state is ChildState.DONE or dependency.life.intent is lc.Intent.REMOVE:
            return
        if pool_remains(dependency, self.children.values()):
            return
        now = time.monotonic()
        for other in dependents(dependency, list(self.children.values())):
            edge = dependency.spec.instance_of or dependency.name  # an instance: its module's
            policy = other.spec.on_failure(edge)
            self.handle(other, lc.DependencyDown(now, edge, policy, drain=self._drains(other)))

    def _drains(self, child: ManagedChild) -> bool:
        return must_drain(child, self.children.values())

    def advance_drains(self) -> None:
        """Each draining module whose following dependents have all stopped stops now."""
        if self.shutting_down:
            return  # the shutdown orders the stops
        for child in list(self.children.values()):
            if child.life.draining and not self._drains(child):
                self.handle(child, lc.DependentsStopped(time.monotonic()))

    # -- stopping --------------------------------------------------------------------------------

    def stop(self, child: ManagedChild, *, timeout: float | None = None) -> None:
        """Ask the module to stop (SIGTERM to its group); SIGKILL follows at the deadline."""
        self.handle(child, lc.StopRequested(time.monotonic(), timeout))

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Stop every module, dependents before what they depend on; the loop ends when none is
        left. With `timeout`, whatever still runs after that many seconds is killed."""
        if not self.shutting_down:
            self.shutting_down = True
            self.publish("app.shutdown", name=self.config.app.name, version=self.config.app.version)
        if timeout is not None:
            self.shutdown_deadline = time.monotonic() + timeout
        self.standbys.close()
        for child in list(self.children.values()):
            self.handle(child, lc.ShutdownBegan())
        self.handovers.shutdown(self.stop)
        self.advance_shutdown()

    def advance_shutdown(self) -> None:
        """Stop each module none of whose dependents has a process any more."""
        if not self.shutting_down:
            return
        now = time.monotonic()
        for child in stoppable(self.children):
            remaining = None
            if self.shutdown_deadline is not None:
                remaining = max(0.0, self.shutdown_deadline - now)
                remaining = min(remaining, child.spec.supervision.stop_timeout)
            self.stop(child, timeout=remaining)

    # -- exits ------------------------------------------------------------------------------------

    def reap(self) -> None:
        """Reap every exited child; apply the policy to each module process's exit."""
        for child, raw in self.processes.reap():
            if self.cgroups.oom_killed(child.cgroup, raw) and child.life.kill is None:
                child.life = replace(child.life, kill=ExitReason.KERNEL_MEMORY_LIMIT)
            now, up_since = time.monotonic(), self.bus_up_since()
            # How long the broker was there for this start: less than half a handshake window
            # (a proof takes milliseconds once it is), and a start that could not prove its bus
            # was not given its chance. (At `up` modules start before the broker says ready.)
            had_bus = 0.0 if up_since is None else now - max(up_since, child.life.started_at)
            exited = lc.Exited(
                now,
                raw,
                child.reported_error or self._last_words(child, raw),
                shutting_down=self.shutting_down,
                jitter=jitter(),
                scheduled=child.spec.schedule is not None,
                bus_outage=had_bus < handshake_timeout(child.spec) / 2,
            )
            self.handle(child, exited)
            if child.stand_in:
                self.handovers.exited(child)
                module = self.children.get(child.name)
                if module is not None and not self.handovers.busy(child.name):
                    self.keep_standby(module)  # the handover is over: its cgroup is free
                    if module.state is ChildState.WAITING:
                        self.start_waiting()  # it may have waited for that process
        self.advance_drains()
        self.advance_shutdown()

    def _last_words(self, child: ManagedChild, raw: int) -> str:
        """For a start that failed before the module process could report why (its shim could
        not even set up: a tiny `nofile`, an address space limit), the last line it printed,
        one bounded line with secrets scrubbed; else ""."""
        failed_setup = (os.WIFEXITED(raw) and os.WEXITSTATUS(raw) in _SETUP_FAILURES) or (
            os.WIFSIGNALED(raw) and os.WTERMSIG(raw) == signal.SIGABRT  # libzmq's assertions
        )
        if not failed_setup or child.state is not ChildState.STARTING or child.log.format != "text":
            return ""
        said = _STAMP.sub("", child.last_words).strip()  # this process's own, never an earlier's
        if os.WIFEXITED(raw) and os.WEXITSTATUS(raw) == 1 and _SHIM_LINE.match(said):
            return ""  # the shim ran to its end (`finished in initialize() (exit 1)`)
        return bounded_message(self.redactor.scrub(said[: 2 * MESSAGE_LIMIT])) if said else ""

    def forget(self, child: ManagedChild) -> None:
        """Forget a module that a reload removed, once it has no process."""
        log.info("%s removed", child.name)
        child.log.close()
        if self.children.get(child.name) is child:  # not if a reload brought it back meanwhile
            self.standbys.drop(child.name)
            self.venvs.forget(child.spec.name)  # a build only it waited for is cancelled
            for key in (child.name, child.name + NEXT_CGROUP, child.name + SPARE_CGROUP):
                if key == child.cgroup or not self.handovers.holds(child):  # not a live stand-in's
                    self.cgroups.remove(key)
            del self.children[child.name]

    def settled(self) -> bool:
        """Every module is running, or has failed or been held back at least once since `up`."""
        return all(
            (
                c.state
                in (
                    ChildState.RUNNING,
                    ChildState.FAILED,
                    ChildState.WAITING,
                    ChildState.STOPPED,
                    ChildState.DONE,
                )
                and not (c.state is ChildState.WAITING and self.venvs.preparing(c.spec))
            )
            or c.failed_spawn > 0
            for c in self.children.values()
        )


def _fill(child: ManagedChild, arg: object) -> object:
    if arg is lc.NAME:
        return child.name
    return child.pid if arg is lc.PID else arg
