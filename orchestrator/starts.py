"""The transitions that start a module (part of `orchestrator.transition`): a start request
checked against what holds it back (the start breaker, a failed install, a dependency or the
memory reserve), and a scheduled run's start that the breaker refuses. Pure, as the transition
function is."""

from __future__ import annotations

from dataclasses import replace

from orchestrator import lifecycle as lc
from orchestrator.lifecycle import Life, Step
from orchestrator.states import ChildState

MEMORY_RECHECK = 1.0  # seconds between checks of a start held back by the memory reserve


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
