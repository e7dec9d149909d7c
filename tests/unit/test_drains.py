"""Dependents stop first: a restart, a hold or a dependency's follow of a running module whose
dependents follow it waits, still running, until they have stopped (the transition's side; the
manager's in test_dependents_follow.py, the processes' in tests/integration/test_dependents_first.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_transitions import EXIT_0, EXIT_1, LIVES, NOW, SETTINGS

from orchestrator import lifecycle as lc
from orchestrator.lifecycle import Intent, Life
from orchestrator.states import ChildState, ExitReason, ExitStatus
from orchestrator.transition import exit_reason, transition

S = ChildState
RUNNING = LIVES[S.RUNNING]
DRAINS: dict[str, tuple[lc.Event, Intent]] = {
    "restart": (lc.RestartRequested(NOW, drain=True), Intent.RESTART),
    "operator_restart": (lc.RestartRequested(NOW, release=True, drain=True), Intent.RESTART),
    "hold": (lc.HoldRequested(NOW, "stopped by operator", drain=True), Intent.STOP),
    "dep_restart": (lc.DependencyDown(NOW, "db", "restart", drain=True), Intent.WAIT),
    "dep_stop": (lc.DependencyDown(NOW, "db", "stop", drain=True), Intent.STOP),
}


def _kinds(step: lc.Step) -> tuple[str, ...]:
    return tuple(type(effect).__name__ for effect in step.effects)


@pytest.mark.parametrize("name", list(DRAINS))
def test_a_running_module_drains_its_dependents_before_its_stop(name: str) -> None:
    event, intent = DRAINS[name]
    step = transition(RUNNING, event, SETTINGS)
    draining = step.life
    assert draining.state is S.RUNNING and draining.draining and draining.intent is intent
    assert "Signal" not in _kinds(step)  # not stopped yet
    assert _kinds(step)[-1] == "DependentsFollow"  # they are told now
    again = transition(draining, event, SETTINGS)  # asked again: the same, nobody told twice
    assert again.life == draining and "DependentsFollow" not in _kinds(again)
    # Their last process is gone: its own stop begins, and (leaving running) they follow again.
    stopping = transition(draining, lc.DependentsStopped(NOW + 1), SETTINGS)
    assert stopping.life.state is S.STOPPING and not stopping.life.draining
    assert stopping.life.intent is intent and stopping.life.deadline == NOW + 1 + 5.0
    assert _kinds(stopping) == ("Log", "Signal", "DependentsFollow")


@pytest.mark.parametrize("name", list(DRAINS))
def test_without_dependents_to_drain_it_stops_at_once(name: str) -> None:
    event, intent = DRAINS[name]
    plain = transition(RUNNING, lc.DependentsStopped(NOW), SETTINGS)
    assert plain.life == RUNNING and not plain.effects
    step = transition(RUNNING, replace(event, drain=False), SETTINGS)  # type: ignore[type-var]
    assert step.life.state is S.STOPPING and step.life.intent is intent


@pytest.mark.parametrize("state", [S.STARTING, S.STOPPING, S.STOPPED, S.BACKOFF])
def test_only_a_running_module_drains(state: ChildState) -> None:
    event, _ = DRAINS["restart"]
    assert not transition(LIVES[state], event, SETTINGS).life.draining


def test_a_draining_module_that_exits_meanwhile_is_no_longer_draining() -> None:
    draining = transition(RUNNING, DRAINS["restart"][0], SETTINGS).life
    exited = transition(draining, lc.Exited(NOW, EXIT_0), SETTINGS)
    assert not exited.life.draining and exited.life.state is S.STOPPED
    assert _kinds(exited)[-3:] == ("TryStart", "WakeWaiting", "DependentsFollow")  # as asked
    # It was not told to stop yet: a crash then is a crash, reported as one.
    crashed = transition(draining, lc.Exited(NOW, EXIT_1), SETTINGS)
    assert exit_reason(draining, ExitStatus(code=1)) is ExitReason.CRASHED
    published = [e.event_type for e in crashed.effects if isinstance(e, lc.Publish)]
    assert published[0] == "module.error", published
    held = transition(RUNNING, DRAINS["hold"][0], SETTINGS).life
    assert transition(held, lc.Exited(NOW, EXIT_1), SETTINGS).life.state is S.STOPPED  # still held
    late = transition(exited.life, lc.DependentsStopped(NOW), SETTINGS)
    assert late.life == exited.life and not late.effects


def test_a_stop_during_the_drain_stops_it_now_and_a_hold_keeps_draining() -> None:
    draining = transition(RUNNING, DRAINS["restart"][0], SETTINGS).life
    stopped = transition(draining, lc.StopRequested(NOW), SETTINGS).life  # down, a shutdown
    assert stopped.state is S.STOPPING and not stopped.draining and stopped.intent is Intent.STOP
    held = transition(draining, DRAINS["hold"][0], SETTINGS).life
    assert held.draining and held.intent is Intent.STOP and held.held == "stopped by operator"
    assert transition(held, lc.DependentsStopped(NOW), SETTINGS).life.intent is Intent.STOP


def test_a_draining_life_is_a_plain_life_field() -> None:
    assert Life().draining is False
