"""The transitions that start a module (part of `orchestrator.transition`): a start request
checked against what holds it back (the start breaker, a failed install, a dependency or the
memory reserve), a scheduled run's start that the breaker refuses, and a start the host refused
a process. Pure, as the transition function is."""

from __future__ import annotations

from dataclasses import replace

from orchestrator import lifecycle as lc
from orchestrator.config import SupervisionSettings
from orchestrator.lifecycle import Intent, Life, Step
from orchestrator.states import ChildState, backoff_delay

MEMORY_RECHECK = 1.0  # seconds between checks of a start held back by the memory reserve
# Bounds of the wait between starts the host refused a process (the module's backoff within
# them): never a busy loop, and a host whose limit was lifted is noticed within seconds.
FORK_RETRY_MIN = 0.1
FORK_RETRY_MAX = 5.0


def start(life: Life, now: float, gate: lc.Gate, announce: bool, count: bool) -> Step:
    """Spawn it, unless something holds the start back: then back off, fail, or wait."""
    if gate.shutting_down or life.state.has_process or life.held:
        return Step(life)
    if gate.hold > 0:
        return Step(replace(life, state=ChildState.BACKOFF, deadline=now + gate.hold))
    if gate.failed is not None:
        return _refused(life, gate.failed)
    if gate.blocked is not None:
        effects = (
            ()
            if life.why == gate.blocked
            else (lc.Log(lc.WARNING, "%s waits: %s", (gate.blocked,)),)
        )
        recheck = gate.blocked.startswith("available memory")
        deadline = now + MEMORY_RECHECK if recheck else None
        waiting = replace(life, state=ChildState.WAITING, why=gate.blocked, deadline=deadline)
        return Step(waiting, effects)
    return Step(life, (lc.Spawn(announce=announce, count=count),))


def refused_by_breaker(life: Life, gate: lc.Gate) -> Step:
    """A scheduled run's start while the start breaker is open: no process now, and none later
    (a backoff would start it off its schedule, unseen by the scheduler); the run is not
    started, and the next due time tries again. Logged once a hold."""
    why = (
        f"{lc.CIRCUIT_OPEN} after {gate.failures} failed starts (circuit_breaker_fail_max):"
        f" no start for {gate.hold:.1f}s"
    )
    if life.held:
        return Step(life)
    if life.why.startswith(lc.CIRCUIT_OPEN):
        return Step(replace(life, why=why))
    note = lc.Log(lc.WARNING, "%s: %s; its scheduled runs are not started meanwhile", (why,))
    return Step(replace(life, why=why), (note,))


def _refused(life: Life, why: str) -> Step:
    """It cannot start at all (its dependencies did not install): failed, without a process."""
    if life.state is ChildState.FAILED and life.why == why:
        return Step(life)
    failed = replace(life, state=ChildState.FAILED, why=why, deadline=None)
    note = lc.Log(
        lc.ERROR, "%s failed: %s; it stays down until `orchestrator restart %s`", (why, lc.NAME)
    )
    return Step(failed, (note, lc.Publish("module.failed", {"reason": why})))


def fork_refused(life: Life, event: lc.SpawnFailed, settings: SupervisionSettings) -> Step:
    """The host refused a process (EAGAIN: a pids cgroup, TasksMax or RLIMIT_NPROC used up;
    ENOMEM): the host's condition, as a broker that is down is, not the module's failure. It
    waits, tries again after a backoff of its own, and is not counted against `max_restarts`
    nor the start breaker; once the host has a process for it again, it starts by itself.
    Logged once a wait, and each try again at debug level."""
    refusals = life.refused_forks + 1
    delay = min(
        max(backoff_delay(settings, refusals, event.jitter), FORK_RETRY_MIN), FORK_RETRY_MAX
    )
    why = f"cannot fork: {event.error}; retrying"
    if life.why == why:
        args = (refusals, delay)
        note = lc.Log(lc.DEBUG, "%s: still cannot fork (%d in a row); next try in %.2fs", args)
    else:
        note = lc.Log(lc.WARNING, "%s waits: %s (the host's limit; not counted against it)", (why,))
    waiting = replace(
        life,
        state=ChildState.WAITING,
        intent=Intent.NONE,
        kill=None,
        why=why,
        deadline=event.now + delay,
        refused_forks=refusals,
    )
    return Step(waiting, (note,))


def retrying_fork(life: Life, now: float) -> bool:
    """Whether it waits out the backoff of a start the host refused: what other modules do
    (`DependencyChanged`) does not cut that short."""
    return (
        life.state is ChildState.WAITING
        and life.refused_forks > 0
        and life.deadline is not None
        and now < life.deadline
    )
