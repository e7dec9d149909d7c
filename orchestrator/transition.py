"""The lifecycle's one transition function: `transition(life, event, settings) -> Step`.

Pure: no clock (every event carries its time), no `os` call, no randomness (a jitter comes in
the event). The `ChildManager` feeds it events and carries out the effects it returns; see
`orchestrator.lifecycle` for the states, events and effects.
"""

from __future__ import annotations

from dataclasses import replace

from module_sdk import protocol
from orchestrator import lifecycle as lc
from orchestrator.config import SupervisionSettings
from orchestrator.lifecycle import Intent, Life, Step
from orchestrator.starts import fork_refused, refused_by_breaker, retrying_fork, start
from orchestrator.states import (
    Action,
    ChildState,
    Decision,
    ExitReason,
    ExitStatus,
    decide_after_exit,
)
from orchestrator.stops import dependency_down, hold, leave, release, stop

START_GRACE = 0.5  # seconds a start whose deadline passed in a stall gets for its ready message
RESTART_TIMES_KEPT = 64
_AT_REST = (ChildState.STOPPED, ChildState.DONE, ChildState.FAILED)  # no process, none coming

_SHIM_EXIT_REASONS = {
    protocol.EXIT_LOAD_FAILED: ExitReason.LOAD_FAILED,
    protocol.EXIT_INIT_FAILED: ExitReason.INIT_FAILED,
}


def transition(life: Life, event: lc.Event, settings: SupervisionSettings) -> Step:
    """The next state data of one module, and the effects to carry out, after `event`. A module
    that stops running (a crash, a stop, a restart) has its dependents follow, last."""
    step = _next(life, event, settings)
    if life.state is ChildState.RUNNING and step.life.state is not ChildState.RUNNING:
        return Step(step.life, (*step.effects, lc.DependentsFollow()))
    return step


def _next(life: Life, event: lc.Event, settings: SupervisionSettings) -> Step:
    match event:
        case lc.StartRequested():
            if event.scheduled and event.gate.hold > 0 and life.state in _AT_REST:
                return refused_by_breaker(life, event.gate)
            return start(life, event.now, event.gate, event.announce, event.count)
        case lc.DependencyChanged():
            if life.state is not ChildState.WAITING or retrying_fork(life, event.now):
                return Step(life)
            return start(life, event.now, event.gate, announce=False, count=False)
        case lc.Spawned():
            return _spawned(life, event, settings)
        case lc.SpawnFailed() if event.host and not event.shutting_down:
            return fork_refused(life, event, settings)
        case lc.SpawnFailed():
            life = replace(life, state=ChildState.STARTING, intent=Intent.NONE, kill=None, why="")
            spawn_failed = lc.Log(lc.ERROR, "%s: cannot start a process: %s", (event.error,))
            step = _exited(
                life,
                settings,
                now=event.now,
                status=ExitStatus(code=127),
                reason=ExitReason.CRASHED,
                error=event.error,
                shutting_down=event.shutting_down,
                jitter=event.jitter,
            )
            return Step(step.life, (spawn_failed, *step.effects))
        case lc.Ready():
            return _ready(life, event)
        case lc.Exited():
            if not life.state.has_process:
                return Step(life)  # not a process of this lifecycle
            status = ExitStatus.from_wait_status(event.wait_status)
            return _exited(
                life,
                settings,
                now=event.now,
                status=status,
                reason=exit_reason(life, status),
                error=life.kill_error or event.error,
                shutting_down=event.shutting_down,
                jitter=event.jitter,
                job=event.scheduled,
                bus_outage=event.bus_outage,
            )
        case lc.BreakerHold():
            return _breaker_hold(life, event)
        case lc.Due():
            return _due(life, event.now)
        case lc.StopRequested():
            intent = Intent.REMOVE if life.intent is Intent.REMOVE else Intent.STOP
            return stop(life, settings, event.now, intent, event.timeout)
        case lc.RestartRequested():
            return _restart(life, settings, event)
        case lc.DependencyDown():
            return dependency_down(life, settings, event)
        case lc.HoldRequested():
            return hold(life, settings, event.now, event.why, drain=event.drain)
        case lc.DependentsStopped():
            if not (life.draining and life.state is ChildState.RUNNING):
                return Step(replace(life, draining=False))
            return stop(life, settings, event.now, life.intent, None)
        case lc.ReleaseRequested():
            return release(life)
        case lc.RemoveRequested():
            return stop(life, settings, event.now, Intent.REMOVE, None)
        case lc.ShutdownBegan():
            if life.state.has_process:
                return Step(life)
            return Step(replace(life, state=ChildState.STOPPED, deadline=None))
        case lc.KillRequested():
            return _kill(life, event.reason) if life.state.has_process else Step(life)
        case lc.HealthFailed():
            # Memory counts from the first allocation; the rest only of a module that runs.
            starting = life.state is ChildState.STARTING
            if life.state is not ChildState.RUNNING and not (
                starting and event.reason is ExitReason.MEMORY_LIMIT
            ):
                return Step(life)
            return _kill(life, event.reason, event.message)
        case lc.Stalled():
            return _stalled(life, event)
    raise AssertionError(f"unknown event {event!r}")  # pragma: no cover


def exit_reason(life: Life, status: ExitStatus) -> ExitReason:
    """Why the process ended: our own reason if we killed it, else what its exit says."""
    if life.kill is not None:
        return life.kill
    if life.stopping_on_request:
        return ExitReason.STOPPED
    if status.code in _SHIM_EXIT_REASONS:
        return _SHIM_EXIT_REASONS[status.code]
    return ExitReason.EXITED if status.code == 0 else ExitReason.CRASHED


def _spawned(life: Life, event: lc.Spawned, settings: SupervisionSettings) -> Step:
    restarts = life.restarts + 1 if event.count else life.restarts
    life = replace(
        life,
        state=ChildState.STARTING,
        intent=Intent.NONE,
        kill=None,
        why="",
        spawns=life.spawns + 1,
        refused_forks=0,
        started_at=event.now,
        ready_at=None,
        deadline=event.now + settings.start_timeout,
        restarts=restarts,
    )
    effects: list[lc.Effect] = [lc.Log(lc.INFO, "%s starting (pid %d)", (event.pid,))]
    if event.announce:
        effects.append(lc.Publish("module.restarted", {"pid": event.pid, "restarts": restarts}))
    return Step(life, tuple(effects))


def _ready(life: Life, event: lc.Ready) -> Step:
    if life.state is not ChildState.STARTING or life.kill is not None:
        return Step(life)  # too late: it is being stopped or killed
    running = replace(life, state=ChildState.RUNNING, ready_at=event.now, deadline=None)
    took = (event.now - life.started_at) * 1000
    return Step(
        running,
        (
            lc.Running(event.now, contained=event.contained),
            lc.RecordStart(started=True),
            lc.Log(lc.INFO, "%s running (pid %d, ready in %.0f ms)", (event.pid, took)),
            lc.Publish("module.loaded", {"pid": event.pid, "config": event.config}),
            lc.WakeWaiting(),
        ),
    )


def _exited(
    life: Life,
    settings: SupervisionSettings,
    *,
    now: float,
    status: ExitStatus,
    reason: ExitReason,
    error: str,
    shutting_down: bool,
    jitter: float,
    job: bool = False,
    bus_outage: bool = False,
) -> Step:
    """Record and announce the end of the process, then decide what comes next: forget it (a
    reload removed it), start it again (a restart asked for), or apply the restart policy. With
    `job` (a scheduled module), an exit 0 before it said ready is its run done: `done`, never
    restarted at once (`restart: always` would run a job in a loop) nor a failed start."""
    ran_stably = life.ready_at is not None and now - life.ready_at >= settings.stable_after
    effects: list[lc.Effect] = []
    job_done = job and reason is ExitReason.EXITED and life.state is ChildState.STARTING
    done = job_done or (reason is ExitReason.EXITED and settings.restart == "never")
    # A job's own failure (a non-zero exit, initialize() raising, a run past start_timeout) is
    # its run's result, and its start worked: the start breaker counts only a start that could
    # not load or reach the bus (a job run every 2 s and exiting 1 was held for a minute).
    job_ran = (
        job
        and life.state is ChildState.STARTING
        and reason is not ExitReason.STOPPED
        and not _could_not_start(reason, status)
    )
    # It could not prove its bus (exit 72, or the start timeout on the way) while the broker
    # was down or silent: the broker's outage, not its own failure.
    excused = (
        bus_outage
        and life.state is ChildState.STARTING
        and (
            (reason is ExitReason.CRASHED and status.code == protocol.EXIT_BUS_FAILED)
            or reason is ExitReason.START_TIMEOUT
        )
    )
    if life.state is ChildState.STARTING and not (done or excused):  # a failed start
        life = replace(life, failed_spawn=life.spawns)
        if reason is not ExitReason.STOPPED and not job_ran:
            effects.append(lc.RecordStart(started=False))
    if job_ran and not excused:
        effects.append(lc.RecordStart(started=True))
    # Dead: its timers run again, and nothing is left to drain.
    life = replace(life, ready_at=None, kill=None, kill_error="", draining=False)
    effects.append(lc.RecordExit(status, reason, error))
    detail = f": {error}" if error else ""
    level = lc.ERROR if reason.is_failure else lc.INFO
    effects.append(lc.Log(level, "%s exited (%s, %s)%s", (status.describe(), reason.value, detail)))
    if reason.is_failure:
        fields = {
            "error": error or reason.value,
            "reason": reason.value,
            "exit_code": status.code,
            "signal": status.signal,
        }
        effects.append(lc.Publish("module.error", fields))
    effects.append(lc.Publish("module.unloaded", {}))
    if life.intent is Intent.REMOVE:
        return Step(life, (*effects, lc.Forget(), lc.WakeWaiting()))
    if life.intent in (Intent.RESTART, Intent.WAIT) and not shutting_down:
        # RESTART starts again at once (announced as a restart); WAIT: its dependencies decide.
        start = lc.TryStart(announce=life.intent is Intent.RESTART)
        life = replace(
            life,
            state=ChildState.STOPPED,
            deadline=None,
            restarts=life.restarts + 1,
            consecutive_failures=0,
        )
        return Step(life, (*effects, start, lc.WakeWaiting()))
    if excused and not (life.stopping_on_request or shutting_down):
        note = lc.Log(
            lc.WARNING, "%s: the broker was down; not counted against it, it starts once it runs"
        )
        life = replace(life, state=ChildState.STOPPED, deadline=None)
        return Step(life, (*effects, note, lc.TryStart(), lc.WakeWaiting()))
    failures = 0
    if reason.is_failure:
        failures = 1 if ran_stably else life.consecutive_failures + 1
    stop_requested = life.stopping_on_request or shutting_down
    if job_done and not stop_requested:
        decision = Decision(Action.STOP, ChildState.DONE, why="done (exit 0)")
    else:
        decision = decide_after_exit(
            settings,
            reason,
            stop_requested=stop_requested,
            consecutive_failures=failures,
            recent_restarts=life.restart_times,
            now=now,
            jitter=jitter,
        )
    life = replace(
        life,
        state=decision.state,
        why=life.held or decision.why,
        deadline=None,
        consecutive_failures=failures,
    )
    if decision.action is Action.RESTART:
        life = replace(
            life,
            deadline=now + decision.delay,
            restart_times=(*life.restart_times, now)[-RESTART_TIMES_KEPT:],
        )
        effects.append(lc.AskBreaker())
    elif decision.action is Action.FAIL:
        effects.append(
            lc.Log(
                lc.ERROR,
                "%s failed: %s; it stays down until `orchestrator restart %s`",
                (decision.why, lc.NAME),
            )
        )
        effects.append(lc.Publish("module.failed", {"reason": decision.why}))
    return Step(life, (*effects, lc.WakeWaiting()))


def _could_not_start(reason: ExitReason, status: ExitStatus) -> bool:
    """The process ended before its module could run: it did not load, or the shim could not
    prove its bus."""
    return reason is ExitReason.LOAD_FAILED or (
        reason is ExitReason.CRASHED and status.code == protocol.EXIT_BUS_FAILED
    )


def _breaker_hold(life: Life, event: lc.BreakerHold) -> Step:
    """After a failed run's backoff was decided: an open start breaker may hold it longer."""
    if life.state is not ChildState.BACKOFF or life.deadline is None:
        return Step(life)
    delay = life.deadline - event.now
    if event.hold > delay:
        delay = event.hold
        # `status` adds the time left: see ManagedChild.reason().
        why = f"{lc.CIRCUIT_OPEN} after {event.failures} failed starts (circuit_breaker_fail_max)"
        life = replace(life, deadline=event.now + delay, why=why)
    return Step(life, (lc.Log(lc.INFO, "%s restarts in %.2fs", (delay,)),))


def _due(life: Life, now: float) -> Step:
    if life.kill is not None or life.deadline is None or now < life.deadline:
        return Step(life)
    if life.state is ChildState.BACKOFF:
        life = replace(life, restarts=life.restarts + 1)
        return Step(life, (lc.TryStart(announce=True),))
    if life.state is ChildState.WAITING:
        return Step(life, (lc.TryStart(),))  # the memory reserve is checked again
    if life.state is ChildState.STARTING:
        return _kill(life, ExitReason.START_TIMEOUT)
    if life.state is ChildState.STOPPING:
        step = _kill(life, ExitReason.STOPPED)
        late = lc.Log(lc.ERROR, "%s did not stop within its stop timeout")
        return Step(step.life, (late, *step.effects))
    return Step(life)


def _kill(life: Life, reason: ExitReason, message: str = "") -> Step:
    """SIGKILL the process group now, recording why (and what its health check said); its
    timers stop."""
    if life.kill is not None:
        return Step(life)
    killed = replace(life, kill=reason, kill_error=message, deadline=None)
    why = f"{reason.value}: {message}" if message else reason.value
    note = lc.Log(lc.ERROR, "%s (pid %d): %s; killing its process group", (lc.PID, why))
    return Step(killed, (note, lc.Signal(term=False)))


def _restart(life: Life, settings: SupervisionSettings, event: lc.RestartRequested) -> Step:
    if life.held and not (event.release or event.revive):
        return Step(life, (lc.Log(lc.INFO, "%s stays stopped (%s): not restarted", (life.held,)),))
    intent = Intent.NONE if event.revive else life.intent
    life = replace(life, intent=intent, consecutive_failures=0, restart_times=(), held="")
    effects: tuple[lc.Effect, ...] = (lc.Log(lc.INFO, "restart of %s requested"), lc.ResetBreaker())
    if not life.state.has_process:
        return Step(life, (*effects, lc.TryStart(count=True)))
    keep = Intent.REMOVE if life.intent is Intent.REMOVE else Intent.RESTART
    step = leave(life, settings, event.now, keep, drain=event.drain)
    return Step(step.life, (*effects, *step.effects))


def _stalled(life: Life, event: lc.Stalled) -> Step:
    if life.kill is not None:
        return Step(life)
    if life.state is ChildState.RUNNING:
        return Step(life, (lc.Running(event.now),))
    if life.state is ChildState.STARTING and life.deadline is not None:
        deadline = max(life.deadline + event.seconds, event.now + START_GRACE)
        return Step(replace(life, deadline=deadline))
    return Step(life)
