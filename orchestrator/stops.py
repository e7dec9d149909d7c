"""The transitions that stop a module on request (part of `orchestrator.transition`): a stop, a
hold and its release, a dependency's stop followed, and the drain of a module's dependents that
comes before its own stop. Pure, as the transition function is."""

from __future__ import annotations

from dataclasses import replace

from orchestrator import lifecycle as lc
from orchestrator.config import SupervisionSettings
from orchestrator.lifecycle import Intent, Life, Step
from orchestrator.states import ChildState

_NOTHING: tuple[lc.Effect, ...] = ()


def stop(
    life: Life, settings: SupervisionSettings, now: float, intent: Intent, timeout: float | None
) -> Step:
    life = replace(life, draining=False)
    if not life.state.has_process:
        kept = intent if intent is Intent.REMOVE else Intent.NONE  # no process: nothing pending
        stopped = replace(life, state=ChildState.STOPPED, deadline=None, intent=kept)
        removed = (lc.Forget(), lc.WakeWaiting())  # a dependent may wait on it no more
        return Step(stopped, removed if intent is Intent.REMOVE else _NOTHING)
    if life.state is ChildState.STOPPING:
        return Step(replace(life, intent=intent))
    grace = settings.stop_timeout if timeout is None else timeout
    stopping = replace(life, state=ChildState.STOPPING, intent=intent, deadline=now + grace)
    note = lc.Log(lc.INFO, "%s stopping (pid %d, SIGTERM, up to %gs)", (lc.PID, grace))
    return Step(stopping, (note, lc.Signal(term=True)))


def leave(
    life: Life, settings: SupervisionSettings, now: float, intent: Intent, *, drain: bool
) -> Step:
    """Stop it for `intent`; a running one whose dependents follow (`drain`: they have a
    process) keeps running until they have stopped (`DependentsStopped`), as OTP's
    `rest_for_one` and systemd stop dependents before what they depend on."""
    if not (drain and life.state is ChildState.RUNNING):
        return stop(life, settings, now, intent, None)
    if life.draining:
        return Step(replace(life, intent=intent))
    note = lc.Log(lc.INFO, "%s stops once its dependents have stopped")
    return Step(replace(life, intent=intent, draining=True), (note, lc.DependentsFollow()))


def dependency_down(life: Life, settings: SupervisionSettings, event: lc.DependencyDown) -> Step:
    """A dependency stopped running: follow it as this edge's policy says. A module that is
    stopped, failed, done or already waiting has nothing to follow; one being stopped keeps what its
    stop leads to (unless the policy holds it)."""
    idle = life.state in (
        ChildState.STOPPED,
        ChildState.FAILED,
        ChildState.WAITING,
        ChildState.DONE,
    )
    if event.policy == "ignore" or idle:
        return Step(life)
    if event.policy == "stop":
        why = f"stopped because {event.dependency} stopped running (on_failure: stop)"
        return hold(life, settings, event.now, why, drain=event.drain)
    if life.state is ChildState.STOPPING:
        return Step(life)
    note = lc.Log(lc.INFO, "%s follows %s: it starts again once that runs", (event.dependency,))
    if life.state is ChildState.BACKOFF:  # its restart waits for the dependency instead
        return Step(replace(life, state=ChildState.STOPPED, deadline=None), (note, lc.TryStart()))
    step = leave(life, settings, event.now, Intent.WAIT, drain=event.drain)
    return Step(step.life, (note, *step.effects))


def hold(
    life: Life, settings: SupervisionSettings, now: float, why: str, *, drain: bool = False
) -> Step:
    """Stop it (if it has a process; its dependents first, with `drain`) and keep it stopped
    for `why` until released."""
    intent = Intent.REMOVE if life.intent is Intent.REMOVE else Intent.STOP
    step = leave(replace(life, held=why), settings, now, intent, drain=drain)
    note = lc.Log(lc.INFO, "%s held stopped: %s", (why,))
    return Step(replace(step.life, why=why), (note, *step.effects))


def release(life: Life) -> Step:
    """Let it start again: at once if it has no process (past failures forgotten, as a restart
    does), once stopped if it is being stopped; a running one has nothing to release."""
    released = replace(life, held="")
    note = lc.Log(lc.INFO, "start of %s requested")
    if life.state is ChildState.STOPPING:
        intent = Intent.REMOVE if life.intent is Intent.REMOVE else Intent.RESTART
        return Step(replace(released, intent=intent, why=""), (note,))
    if life.state.has_process:
        return Step(released)
    fresh = replace(
        released,
        state=ChildState.STOPPED,
        deadline=None,
        why="",
        consecutive_failures=0,
        restart_times=(),
    )
    return Step(fresh, (note, lc.ResetBreaker(), lc.TryStart()))
