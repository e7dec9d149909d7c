"""The lifecycle's transition function, without processes: a table of every state x event, then
the sub-states (what a stop leads to, a kill in flight) and the policy's corners."""

from __future__ import annotations

import itertools
import signal
from dataclasses import replace
from typing import Any

import pytest

from orchestrator import lifecycle as lc
from orchestrator.config import SupervisionSettings
from orchestrator.lifecycle import Intent, Life
from orchestrator.starts import MEMORY_RECHECK
from orchestrator.states import ChildState, ExitReason, ExitStatus
from orchestrator.transition import START_GRACE, exit_reason, transition

S = ChildState
NOW = 1000.0
SETTINGS = SupervisionSettings(
    restart="on-failure",
    max_restarts=3,
    restart_window=60.0,
    backoff_initial=0.5,
    backoff_multiplier=2.0,
    backoff_max=30.0,
    start_timeout=10.0,
    stop_timeout=5.0,
    stable_after=30.0,
)
EXIT_1 = 1 << 8  # raw wait statuses
EXIT_0 = 0
KILLED = signal.SIGKILL

# One life per state, as the supervisor would hold it: a deadline that has passed where the state
# has one, a process (and a spawn) where the state has one.
LIVES = {
    S.STOPPED: Life(),
    S.WAITING: Life(S.WAITING, why="available memory below the reserve", deadline=NOW - 1),
    S.STARTING: Life(S.STARTING, deadline=NOW - 1, started_at=NOW - 11, spawns=1),
    S.RUNNING: Life(S.RUNNING, started_at=NOW - 50, ready_at=NOW - 49, spawns=1),
    S.STOPPING: Life(S.STOPPING, intent=Intent.STOP, deadline=NOW - 1, spawns=1),
    S.BACKOFF: Life(S.BACKOFF, why="crash", deadline=NOW - 1, consecutive_failures=1),
    S.FAILED: Life(S.FAILED, why="3 restarts within 60s (max_restarts 3)"),
    S.DONE: Life(S.DONE, why="done (exit 0, restart: never)", spawns=1),
}
EVENTS: dict[str, lc.Event] = {
    "start": lc.StartRequested(NOW, lc.Gate()),
    "dependency": lc.DependencyChanged(NOW, lc.Gate()),
    "spawned": lc.Spawned(NOW, 42),
    "spawn_failed": lc.SpawnFailed(NOW, "no such file"),
    "ready": lc.Ready(NOW, 42, contained=True),
    "exited": lc.Exited(NOW, EXIT_1),
    "breaker": lc.BreakerHold(NOW, hold=20.0, failures=5),
    "due": lc.Due(NOW),
    "stop": lc.StopRequested(NOW),
    "restart": lc.RestartRequested(NOW),
    "dep_restart": lc.DependencyDown(NOW, "db", "restart"),
    "dep_stop": lc.DependencyDown(NOW, "db", "stop"),
    "dep_ignore": lc.DependencyDown(NOW, "db", "ignore"),
    "hold": lc.HoldRequested(NOW, "stopped by operator"),
    "release": lc.ReleaseRequested(NOW),
    "remove": lc.RemoveRequested(NOW),
    "shutdown": lc.ShutdownBegan(),
    "kill": lc.KillRequested(ExitReason.STOPPED),
    "unhealthy": lc.HealthFailed(ExitReason.HUNG),
    "health_check": lc.HealthFailed(ExitReason.UNHEALTHY, "db down"),
    "stalled": lc.Stalled(NOW, 5.0),
    "dependents_stopped": lc.DependentsStopped(NOW),  # not draining: nothing (test_drains.py)
}
PROCESS = (S.STARTING, S.RUNNING, S.STOPPING)
IDLE = (S.STOPPED, S.WAITING, S.BACKOFF, S.FAILED, S.DONE)
SAME: Any = None  # the state does not change
NONE = ()  # no effect
KILL = ("Log", "Signal")
STOP = ("Log", "Signal")
CRASH_NEXT = ("RecordExit", "Log", "Publish", "Publish", "AskBreaker", "WakeWaiting")

# (state, event) -> (the next state, the kinds of the effects in order)
EXPECTED: dict[tuple[ChildState, str], tuple[ChildState | None, tuple[str, ...]]] = {
    **{(s, "start"): (SAME, ("Spawn",)) for s in IDLE},
    **{(s, "start"): (SAME, NONE) for s in PROCESS},
    **{(s, "dependency"): (SAME, NONE) for s in S if s is not S.WAITING},
    (S.WAITING, "dependency"): (SAME, ("Spawn",)),
    **{(s, "spawned"): (S.STARTING, ("Log",)) for s in S},
    **{(s, "spawn_failed"): (S.BACKOFF, ("Log", "RecordStart", *CRASH_NEXT)) for s in S},
    # (not reached: a running module is not spawned) whatever leaves running, dependents follow
    (S.RUNNING, "spawned"): (S.STARTING, ("Log", "DependentsFollow")),
    (S.RUNNING, "spawn_failed"): (
        S.BACKOFF,
        ("Log", "RecordStart", *CRASH_NEXT, "DependentsFollow"),
    ),
    **{(s, "ready"): (SAME, NONE) for s in S if s is not S.STARTING},
    (S.STARTING, "ready"): (
        S.RUNNING,
        ("Running", "RecordStart", "Log", "Publish", "WakeWaiting"),
    ),
    **{(s, "exited"): (SAME, NONE) for s in IDLE},
    (S.STARTING, "exited"): (S.BACKOFF, ("RecordStart", *CRASH_NEXT)),
    (S.RUNNING, "exited"): (S.BACKOFF, (*CRASH_NEXT, "DependentsFollow")),
    (S.STOPPING, "exited"): (S.STOPPED, ("RecordExit", "Log", "Publish", "WakeWaiting")),
    **{(s, "breaker"): (SAME, NONE) for s in S if s is not S.BACKOFF},
    (S.BACKOFF, "breaker"): (SAME, ("Log",)),
    (S.STOPPED, "due"): (SAME, NONE),
    (S.WAITING, "due"): (SAME, ("TryStart",)),
    (S.STARTING, "due"): (SAME, KILL),
    (S.RUNNING, "due"): (SAME, NONE),
    (S.STOPPING, "due"): (SAME, ("Log", *KILL)),
    (S.BACKOFF, "due"): (SAME, ("TryStart",)),
    (S.FAILED, "due"): (SAME, NONE),
    (S.DONE, "due"): (SAME, NONE),
    **{(s, "stop"): (S.STOPPED, NONE) for s in IDLE},
    (S.STARTING, "stop"): (S.STOPPING, STOP),
    (S.RUNNING, "stop"): (S.STOPPING, (*STOP, "DependentsFollow")),
    (S.STOPPING, "stop"): (SAME, NONE),
    **{(s, "restart"): (SAME, ("Log", "ResetBreaker", "TryStart")) for s in IDLE},
    (S.STARTING, "restart"): (S.STOPPING, ("Log", "ResetBreaker", *STOP)),
    (S.RUNNING, "restart"): (S.STOPPING, ("Log", "ResetBreaker", *STOP, "DependentsFollow")),
    (S.STOPPING, "restart"): (SAME, ("Log", "ResetBreaker")),
    **{(s, "remove"): (S.STOPPED, ("Forget", "WakeWaiting")) for s in IDLE},
    (S.STARTING, "remove"): (S.STOPPING, STOP),
    (S.RUNNING, "remove"): (S.STOPPING, (*STOP, "DependentsFollow")),
    (S.STOPPING, "remove"): (SAME, NONE),
    **{
        (s, "dep_restart"): (SAME, NONE)
        for s in (S.STOPPED, S.WAITING, S.FAILED, S.DONE, S.STOPPING)
    },
    (S.STARTING, "dep_restart"): (S.STOPPING, ("Log", *STOP)),
    (S.RUNNING, "dep_restart"): (S.STOPPING, ("Log", *STOP, "DependentsFollow")),
    (S.BACKOFF, "dep_restart"): (S.STOPPED, ("Log", "TryStart")),
    **{(s, "dep_stop"): (SAME, NONE) for s in (S.STOPPED, S.WAITING, S.FAILED, S.DONE)},
    (S.STARTING, "dep_stop"): (S.STOPPING, ("Log", *STOP)),
    (S.RUNNING, "dep_stop"): (S.STOPPING, ("Log", *STOP, "DependentsFollow")),
    (S.STOPPING, "dep_stop"): (SAME, ("Log",)),
    (S.BACKOFF, "dep_stop"): (S.STOPPED, ("Log",)),
    **{(s, "dep_ignore"): (SAME, NONE) for s in S},
    **{(s, "hold"): (S.STOPPED, ("Log",)) for s in IDLE},
    (S.STARTING, "hold"): (S.STOPPING, ("Log", *STOP)),
    (S.RUNNING, "hold"): (S.STOPPING, ("Log", *STOP, "DependentsFollow")),
    (S.STOPPING, "hold"): (SAME, ("Log",)),
    **{(s, "release"): (S.STOPPED, ("Log", "ResetBreaker", "TryStart")) for s in IDLE},
    **{(s, "release"): (SAME, NONE) for s in PROCESS},
    (S.STOPPING, "release"): (SAME, ("Log",)),  # "start of X requested": it starts once stopped
    **{(s, "shutdown"): (S.STOPPED, NONE) for s in IDLE},
    **{(s, "shutdown"): (SAME, NONE) for s in PROCESS},
    **{(s, "kill"): (SAME, NONE) for s in IDLE},
    **{(s, "kill"): (SAME, KILL) for s in PROCESS},
    **{(s, "unhealthy"): (SAME, NONE) for s in S if s is not S.RUNNING},
    (S.RUNNING, "unhealthy"): (SAME, KILL),
    **{(s, "health_check"): (SAME, NONE) for s in S if s is not S.RUNNING},
    (S.RUNNING, "health_check"): (SAME, KILL),
    **{(s, "stalled"): (SAME, NONE) for s in S if s is not S.RUNNING},
    (S.RUNNING, "stalled"): (SAME, ("Running",)),
    **{(s, "dependents_stopped"): (SAME, NONE) for s in S},
}


def _kinds(step: lc.Step) -> tuple[str, ...]:
    return tuple(type(effect).__name__ for effect in step.effects)


def _effects(step: lc.Step, kind: type[Any]) -> list[Any]:
    return [effect for effect in step.effects if isinstance(effect, kind)]


def test_the_table_covers_every_state_and_event() -> None:
    assert set(EXPECTED) == set(itertools.product(S, EVENTS))
    assert {type(e) for e in EVENTS.values()} == set(lc.Event.__args__)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(S, EVENTS)), ids=lambda v: getattr(v, "value", v)
)
def test_every_state_and_event(state: ChildState, event: str) -> None:
    life = LIVES[state]
    step = transition(life, EVENTS[event], SETTINGS)
    next_state, kinds = EXPECTED[state, event]
    assert step.life.state is (state if next_state is SAME else next_state)
    assert _kinds(step) == kinds
    assert transition(life, EVENTS[event], SETTINGS) == step  # pure: the same answer again


# -- starting --------------------------------------------------------------------------------------


def test_a_start_held_by_the_breaker_backs_off_for_the_hold() -> None:
    step = transition(Life(S.FAILED), lc.StartRequested(NOW, lc.Gate(hold=7.0)), SETTINGS)
    assert step.life.state is S.BACKOFF and step.life.deadline == NOW + 7.0 and not step.effects


def test_a_blocked_start_waits_and_says_why_once() -> None:
    blocked = lc.StartRequested(NOW, lc.Gate(blocked="waiting for db to run (depends_on)"))
    first = transition(Life(), blocked, SETTINGS)
    assert first.life.state is S.WAITING and first.life.deadline is None
    assert _kinds(first) == ("Log",)
    assert transition(first.life, blocked, SETTINGS).effects == ()  # the same reason: no new log


def test_a_start_short_of_memory_is_checked_again() -> None:
    gate = lc.Gate(blocked="available memory 10 MB is below the reserve")
    step = transition(Life(), lc.StartRequested(NOW, gate), SETTINGS)
    assert step.life.deadline == NOW + MEMORY_RECHECK


def test_no_start_while_shutting_down() -> None:
    gate = lc.Gate(shutting_down=True)
    assert transition(Life(), lc.StartRequested(NOW, gate), SETTINGS) == lc.Step(Life())


def test_a_spawn_clears_the_previous_process_sub_states_and_sets_the_start_timeout() -> None:
    before = Life(S.BACKOFF, intent=Intent.RESTART, kill=ExitReason.HUNG, why="crash", spawns=2)
    step = transition(before, lc.Spawned(NOW, 7, announce=True, count=True), SETTINGS)
    assert step.life == replace(
        before,
        state=S.STARTING,
        intent=Intent.NONE,
        kill=None,
        why="",
        spawns=3,
        restarts=1,
        started_at=NOW,
        deadline=NOW + SETTINGS.start_timeout,
    )
    assert _effects(step, lc.Publish) == [lc.Publish("module.restarted", {"pid": 7, "restarts": 1})]


def test_ready_while_being_killed_is_too_late() -> None:
    killed = replace(LIVES[S.STARTING], kill=ExitReason.START_TIMEOUT)
    assert transition(killed, lc.Ready(NOW, 1, True), SETTINGS) == lc.Step(killed)


def test_ready_announces_loaded_with_pid_and_config() -> None:
    step = transition(LIVES[S.STARTING], lc.Ready(NOW, 9, False, {"k": 1}), SETTINGS)
    assert step.life.ready_at == NOW and step.life.deadline is None
    assert _effects(step, lc.Publish) == [
        lc.Publish("module.loaded", {"pid": 9, "config": {"k": 1}})
    ]
    assert _effects(step, lc.Running) == [lc.Running(NOW, contained=False)]


# -- what a stop leads to ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "intent"),
    [
        (lc.StopRequested(NOW), lc.RestartRequested(NOW), Intent.RESTART),
        (lc.RestartRequested(NOW), lc.StopRequested(NOW), Intent.STOP),  # a shutdown wins
        (lc.RemoveRequested(NOW), lc.StopRequested(NOW), Intent.REMOVE),
        (lc.RemoveRequested(NOW), lc.RestartRequested(NOW), Intent.REMOVE),
        (lc.RemoveRequested(NOW), lc.RestartRequested(NOW, revive=True), Intent.RESTART),
    ],
)
def test_the_latest_request_decides_what_a_stop_leads_to(
    first: lc.Event, then: lc.Event, intent: Intent
) -> None:
    stopping = transition(LIVES[S.RUNNING], first, SETTINGS).life
    assert stopping.state is S.STOPPING
    assert transition(stopping, then, SETTINGS).life.intent is intent


def test_a_stop_signals_term_with_its_timeout() -> None:
    step = transition(LIVES[S.RUNNING], lc.StopRequested(NOW, timeout=1.5), SETTINGS)
    assert step.life.deadline == NOW + 1.5 and lc.Signal(term=True) in step.effects


def test_a_restarted_process_that_stopped_starts_again_at_once() -> None:
    stopping = transition(LIVES[S.RUNNING], lc.RestartRequested(NOW), SETTINGS).life
    step = transition(stopping, lc.Exited(NOW, EXIT_0), SETTINGS)
    assert step.life.state is S.STOPPED and step.life.restarts == 1
    assert step.life.consecutive_failures == 0
    assert _kinds(step)[-2:] == ("TryStart", "WakeWaiting")
    assert _effects(step, lc.TryStart) == [lc.TryStart(announce=True)]
    assert _effects(step, lc.RecordExit)[0].reason is ExitReason.STOPPED


def test_a_restart_caught_by_the_shutdown_stays_stopped() -> None:
    stopping = transition(LIVES[S.RUNNING], lc.RestartRequested(NOW), SETTINGS).life
    step = transition(stopping, lc.Exited(NOW, EXIT_0, shutting_down=True), SETTINGS)
    assert step.life.state is S.STOPPED and step.life.why == "stop requested"
    assert not _effects(step, lc.TryStart)


def test_a_removed_module_is_forgotten_once_its_process_exited() -> None:
    stopping = transition(LIVES[S.RUNNING], lc.RemoveRequested(NOW), SETTINGS).life
    step = transition(stopping, lc.Exited(NOW, KILLED), SETTINGS)
    assert _kinds(step)[-2:] == ("Forget", "WakeWaiting")


def test_a_restart_forgets_past_failures() -> None:
    failed = Life(S.FAILED, consecutive_failures=4, restart_times=(NOW - 3, NOW - 2))
    step = transition(failed, lc.RestartRequested(NOW), SETTINGS)
    assert step.life.consecutive_failures == 0 and step.life.restart_times == ()
    assert _effects(step, lc.TryStart) == [lc.TryStart(count=True)]


# -- kills and health ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason"),
    [(S.STARTING, ExitReason.START_TIMEOUT), (S.STOPPING, ExitReason.STOPPED)],
)
def test_a_passed_deadline_kills_with_its_reason(state: ChildState, reason: ExitReason) -> None:
    step = transition(LIVES[state], lc.Due(NOW), SETTINGS)
    assert step.life.kill is reason and step.life.deadline is None
    assert lc.Signal(term=False) in step.effects


def test_a_deadline_not_yet_due_waits() -> None:
    life = replace(LIVES[S.BACKOFF], deadline=NOW + 1)
    assert transition(life, lc.Due(NOW), SETTINGS) == lc.Step(life)


def test_a_killed_process_only_awaits_its_exit() -> None:
    killed = replace(LIVES[S.RUNNING], kill=ExitReason.HUNG)
    for event in (lc.Due(NOW), lc.HealthFailed(ExitReason.MEMORY_LIMIT), lc.Stalled(NOW, 1.0)):
        assert transition(killed, event, SETTINGS) == lc.Step(killed)
    step = transition(killed, lc.Exited(NOW, KILLED), SETTINGS)
    assert step.life.kill is None and step.life.state is S.BACKOFF
    assert _effects(step, lc.RecordExit)[0].reason is ExitReason.HUNG


def test_a_failed_health_check_is_the_exit_reason_with_its_message() -> None:
    step = transition(LIVES[S.RUNNING], EVENTS["health_check"], SETTINGS)
    assert step.life.kill is ExitReason.UNHEALTHY and step.life.kill_error == "db down"
    assert _effects(step, lc.Log)[0].args == (lc.PID, "unhealthy: db down")
    again = transition(step.life, lc.HealthFailed(ExitReason.UNHEALTHY, "other"), SETTINGS)
    assert again == lc.Step(step.life)  # the first reason stands
    exited = transition(step.life, lc.Exited(NOW, KILLED, error="late report"), SETTINGS)
    record = _effects(exited, lc.RecordExit)[0]
    assert (record.reason, record.error) == (ExitReason.UNHEALTHY, "db down")
    error = next(e for e in _effects(exited, lc.Publish) if e.event_type == "module.error")
    assert error.data["error"] == "db down" and error.data["reason"] == "unhealthy"
    assert exited.life.kill is None and exited.life.kill_error == ""
    assert exited.life.state is S.BACKOFF  # a failure: the restart policy applies
    hung = transition(LIVES[S.RUNNING], lc.HealthFailed(ExitReason.HUNG), SETTINGS)
    record = _effects(
        transition(hung.life, lc.Exited(NOW, KILLED, "said"), SETTINGS), lc.RecordExit
    )
    assert record[0].error == "said"  # no message of ours: the child's report stands


def test_a_stall_moves_the_start_deadline() -> None:
    life = replace(LIVES[S.STARTING], deadline=NOW + 2)
    assert transition(life, lc.Stalled(NOW, 5.0), SETTINGS).life.deadline == NOW + 7
    life = replace(LIVES[S.STARTING], deadline=NOW - 9)
    assert transition(life, lc.Stalled(NOW, 5.0), SETTINGS).life.deadline == NOW + START_GRACE


# -- exits and the policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("life", "status", "reason"),
    [
        (Life(S.RUNNING), ExitStatus(code=0), ExitReason.EXITED),
        (Life(S.RUNNING), ExitStatus(code=1), ExitReason.CRASHED),
        (Life(S.STARTING), ExitStatus(code=70), ExitReason.LOAD_FAILED),
        (Life(S.STARTING), ExitStatus(code=71), ExitReason.INIT_FAILED),
        (Life(S.STOPPING, intent=Intent.STOP), ExitStatus(code=1), ExitReason.STOPPED),
        (Life(S.STOPPING, kill=ExitReason.STOPPED, intent=Intent.STOP), ExitStatus(signal=9),
         ExitReason.STOPPED),
        (Life(S.RUNNING, kill=ExitReason.MEMORY_LIMIT), ExitStatus(signal=9),
         ExitReason.MEMORY_LIMIT),
    ],
)  # fmt: skip
def test_exit_reason(life: Life, status: ExitStatus, reason: ExitReason) -> None:
    assert exit_reason(life, status) is reason


def test_a_failed_start_counts_for_the_breaker_and_its_generation() -> None:
    step = transition(LIVES[S.STARTING], lc.Exited(NOW, 70 << 8), SETTINGS)
    assert step.life.failed_spawn == 1
    assert lc.RecordStart(started=False) in step.effects
    assert step.life.deadline == NOW + 0.0  # the first restart of a crash loop is at once


def test_a_start_stopped_on_request_is_not_held_against_the_breaker() -> None:
    stopping = replace(LIVES[S.STARTING], intent=Intent.STOP)
    step = transition(stopping, lc.Exited(NOW, EXIT_0), SETTINGS)
    assert step.life.failed_spawn == 1 and not _effects(step, lc.RecordStart)


def test_crashes_in_a_row_back_off_and_a_stable_run_starts_over() -> None:
    unstable = Life(S.RUNNING, ready_at=NOW - 1, consecutive_failures=2)
    step = transition(unstable, lc.Exited(NOW, EXIT_1), SETTINGS)
    assert step.life.consecutive_failures == 3 and step.life.deadline == NOW + 1.0
    stable = replace(unstable, ready_at=NOW - SETTINGS.stable_after)
    assert transition(stable, lc.Exited(NOW, EXIT_1), SETTINGS).life.consecutive_failures == 1


def test_the_restart_limit_fails_the_module() -> None:
    life = Life(S.RUNNING, restart_times=(NOW - 3, NOW - 2, NOW - 1))
    step = transition(life, lc.Exited(NOW, EXIT_1), SETTINGS)
    assert step.life.state is S.FAILED and "max_restarts 3" in step.life.why
    failed = _effects(step, lc.Publish)[-1]
    assert failed == lc.Publish("module.failed", {"reason": step.life.why})


def test_the_module_error_carries_the_reported_error() -> None:
    step = transition(LIVES[S.RUNNING], lc.Exited(NOW, EXIT_1, error="boom"), SETTINGS)
    error, unloaded = _effects(step, lc.Publish)
    assert error == lc.Publish(
        "module.error", {"error": "boom", "reason": "crash", "exit_code": 1, "signal": None}
    )
    assert unloaded == lc.Publish("module.unloaded", {})


def test_a_clean_exit_is_not_restarted_on_failure_only() -> None:
    step = transition(LIVES[S.RUNNING], lc.Exited(NOW, EXIT_0), SETTINGS)
    assert step.life.state is S.STOPPED and "on-failure" in step.life.why
    assert not _effects(step, lc.Publish)[:-1]  # only module.unloaded


@pytest.mark.parametrize("restart", ["always", "on-failure", "never"])
def test_a_scheduled_job_that_exits_0_is_done_whatever_its_restart_policy(restart: str) -> None:
    settings = replace(SETTINGS, restart=restart)
    step = transition(LIVES[S.STARTING], lc.Exited(NOW, EXIT_0, scheduled=True), settings)
    assert step.life.state is S.DONE and step.life.deadline is None
    # A start that worked, for the start breaker (a half-open one closes); no backoff.
    assert _effects(step, lc.RecordStart) == [lc.RecordStart(started=True)]
    assert not _effects(step, lc.AskBreaker)
    assert step.life.failed_spawn == 0  # not a failed start
    failed = transition(LIVES[S.STARTING], lc.Exited(NOW, EXIT_1, scheduled=True), settings)
    assert failed.life.state is (S.STOPPED if restart == "never" else S.BACKOFF)


@pytest.mark.parametrize(
    ("wait_status", "kill"),
    [(EXIT_1, None), (71 << 8, None), (signal.SIGSEGV, None), (KILLED, ExitReason.START_TIMEOUT)],
    ids=["sys.exit(1)", "initialize-raised", "SIGSEGV", "start-timeout"],
)
@pytest.mark.parametrize("restart", ["never", "on-failure"])
def test_a_jobs_own_failure_is_its_runs_result_not_a_failed_start(
    wait_status: int, kill: ExitReason | None, restart: str
) -> None:
    """A job exiting 1 every 2 s fed the start breaker, which then held it for a minute."""
    settings = replace(SETTINGS, restart=restart)
    starting = replace(LIVES[S.STARTING], kill=kill)
    step = transition(starting, lc.Exited(NOW, wait_status, scheduled=True), settings)
    assert _effects(step, lc.RecordStart) == [lc.RecordStart(started=True)]
    assert step.life.state is (S.STOPPED if restart == "never" else S.BACKOFF)
    unscheduled = transition(starting, lc.Exited(NOW, wait_status), settings)
    assert _effects(unscheduled, lc.RecordStart) == [lc.RecordStart(started=False)]


@pytest.mark.parametrize("code", [70, 72], ids=["load-failed", "bus-failed"])
def test_a_job_that_cannot_start_still_feeds_the_breaker(code: int) -> None:
    settings = replace(SETTINGS, restart="never")
    step = transition(LIVES[S.STARTING], lc.Exited(NOW, code << 8, scheduled=True), settings)
    assert _effects(step, lc.RecordStart) == [lc.RecordStart(started=False)]
    assert step.life.state is S.STOPPED


@pytest.mark.parametrize("state", [S.STOPPED, S.DONE, S.FAILED])
def test_a_scheduled_start_the_breaker_holds_is_refused_not_deferred(state: ChildState) -> None:
    """It went to backoff, so the scheduler saw a run in progress for the whole hold, skipped
    each due time as an overlap, and the job then started off its schedule."""
    gate = lc.Gate(hold=38.5, failures=5)
    step = transition(LIVES[state], lc.StartRequested(NOW, gate, scheduled=True), SETTINGS)
    assert step.life.state is state and step.life.deadline is None
    assert step.life.why == (
        "circuit open after 5 failed starts (circuit_breaker_fail_max): no start for 38.5s"
    )
    (note,) = step.effects  # no Spawn, no TryStart: the next due time tries again
    assert isinstance(note, lc.Log) and note.level == lc.WARNING
    again = transition(step.life, lc.StartRequested(NOW + 2, gate, scheduled=True), SETTINGS)
    assert again.effects == ()  # logged once a hold
    unscheduled = transition(LIVES[state], lc.StartRequested(NOW, gate), SETTINGS)
    assert unscheduled.life.state is S.BACKOFF and unscheduled.life.deadline == NOW + 38.5
    held = replace(LIVES[state], held="stopped by operator")
    assert transition(held, lc.StartRequested(NOW, gate, scheduled=True), SETTINGS).life == held


def test_a_scheduled_module_with_run_follows_its_policy_once_running() -> None:
    settings = replace(SETTINGS, restart="always")
    step = transition(LIVES[S.RUNNING], lc.Exited(NOW, EXIT_0, scheduled=True), settings)
    assert step.life.state is S.BACKOFF  # it said ready: a module that stays up, not a job
    unscheduled = transition(LIVES[S.STARTING], lc.Exited(NOW, EXIT_0), settings)
    assert unscheduled.life.state is S.BACKOFF
    assert lc.RecordStart(started=False) in unscheduled.effects


@pytest.mark.parametrize("kill", [None, ExitReason.START_TIMEOUT])
def test_a_start_that_failed_on_a_broker_outage_is_not_counted(kill: ExitReason | None) -> None:
    starting = replace(LIVES[S.STARTING], kill=kill)
    raw = KILLED if kill else 72 << 8  # the start timeout's kill, or the shim's bus failure
    step = transition(starting, lc.Exited(NOW, raw, bus_outage=True), SETTINGS)
    assert step.life.state is S.STOPPED and step.life.consecutive_failures == 0
    assert step.life.failed_spawn == 0 and not _effects(step, lc.RecordStart)
    assert lc.TryStart() in step.effects and not _effects(step, lc.AskBreaker)
    counted = transition(starting, lc.Exited(NOW, raw), SETTINGS)  # the broker was up all along
    assert counted.life.state is S.BACKOFF and lc.RecordStart(started=False) in counted.effects
    crash = transition(starting, lc.Exited(NOW, EXIT_1, bus_outage=True), SETTINGS)
    assert kill or crash.life.state is S.BACKOFF  # any other exit is its own


def test_an_open_breaker_holds_the_restart_longer() -> None:
    backoff = replace(LIVES[S.BACKOFF], deadline=NOW + 1)
    step = transition(backoff, lc.BreakerHold(NOW, hold=20.0, failures=5), SETTINGS)
    assert step.life.deadline == NOW + 20.0 and step.life.why.startswith("circuit open after 5")
    shorter = transition(backoff, lc.BreakerHold(NOW, hold=0.5, failures=5), SETTINGS)
    assert shorter.life == backoff


def test_restart_times_keep_only_the_latest() -> None:
    life = Life(S.RUNNING, restart_times=tuple(NOW - 1000 - i for i in range(64)))
    step = transition(life, lc.Exited(NOW, EXIT_1), SETTINGS)
    assert len(step.life.restart_times) == 64 and step.life.restart_times[-1] == NOW


# -- dependents follow, holds --------------------------------------------------------------------


def test_a_dependent_that_follows_waits_for_its_dependency_after_its_stop() -> None:
    stopping = transition(LIVES[S.RUNNING], EVENTS["dep_restart"], SETTINGS).life
    assert stopping.intent is Intent.WAIT and not stopping.held
    step = transition(stopping, lc.Exited(NOW, EXIT_0), SETTINGS)
    assert step.life.state is S.STOPPED and step.life.consecutive_failures == 0
    assert step.life.restarts == 1  # it counts as a restart, as one asked for does
    assert _kinds(step)[-2:] == ("TryStart", "WakeWaiting")
    assert _effects(step, lc.TryStart) == [lc.TryStart()]  # the gate makes it wait
    blocked = lc.Gate(blocked="waiting for db to run (depends_on)")
    waiting = transition(step.life, lc.StartRequested(NOW, blocked), SETTINGS).life
    assert waiting.state is S.WAITING and waiting.why == blocked.blocked


def test_a_dependent_caught_by_the_shutdown_stays_stopped() -> None:
    stopping = transition(LIVES[S.RUNNING], EVENTS["dep_restart"], SETTINGS).life
    step = transition(stopping, lc.Exited(NOW, EXIT_0, shutting_down=True), SETTINGS)
    assert step.life.state is S.STOPPED and not _effects(step, lc.TryStart)


@pytest.mark.parametrize("event", ["hold", "dep_stop"])
def test_a_held_module_stays_stopped_and_says_why(event: str) -> None:
    stopping = transition(LIVES[S.RUNNING], EVENTS[event], SETTINGS).life
    why = stopping.held
    assert why in ("stopped by operator", "stopped because db stopped running (on_failure: stop)")
    stopped = transition(stopping, lc.Exited(NOW, EXIT_0), SETTINGS).life
    assert stopped.state is S.STOPPED and stopped.why == why and stopped.held == why
    for nothing in (
        lc.StartRequested(NOW, lc.Gate()),
        lc.DependencyChanged(NOW, lc.Gate()),
        lc.Due(NOW),
    ):
        assert transition(stopped, nothing, SETTINGS).life == stopped
        assert not _effects(transition(stopped, nothing, SETTINGS), lc.Spawn)
    reload = transition(stopped, lc.RestartRequested(NOW), SETTINGS)  # a reload's, a hot reload's
    assert reload.life == stopped and _kinds(reload) == ("Log",)
    operator = transition(stopped, lc.RestartRequested(NOW, release=True), SETTINGS)
    assert operator.life.held == "" and _effects(operator, lc.TryStart) == [lc.TryStart(count=True)]
    started = transition(stopped, lc.ReleaseRequested(NOW), SETTINGS)
    assert started.life.held == "" and started.life.why == ""
    assert _effects(started, lc.TryStart) == [lc.TryStart()]
    step = transition(started.life, lc.StartRequested(NOW, lc.Gate()), SETTINGS)
    assert _kinds(step) == ("Spawn",)


def test_a_hold_wins_over_a_restart_in_flight_and_a_release_over_the_hold() -> None:
    restarting = transition(LIVES[S.RUNNING], lc.RestartRequested(NOW), SETTINGS).life
    held = transition(restarting, EVENTS["hold"], SETTINGS).life
    assert held.intent is Intent.STOP and held.held
    released = transition(held, lc.ReleaseRequested(NOW), SETTINGS).life
    assert released.intent is Intent.RESTART and not released.held  # starts once stopped
    waiting = transition(LIVES[S.RUNNING], EVENTS["dep_restart"], SETTINGS).life
    assert transition(waiting, EVENTS["dep_stop"], SETTINGS).life.intent is Intent.STOP


def test_a_held_module_that_a_reload_removes_is_still_forgotten() -> None:
    held = transition(LIVES[S.RUNNING], EVENTS["hold"], SETTINGS).life
    removing = transition(held, lc.RemoveRequested(NOW), SETTINGS).life
    assert removing.intent is Intent.REMOVE
    assert _kinds(transition(removing, lc.Exited(NOW, EXIT_0), SETTINGS))[-2:] == (
        "Forget",
        "WakeWaiting",
    )
    back = transition(removing, lc.RestartRequested(NOW, revive=True), SETTINGS).life
    assert back.intent is Intent.RESTART and not back.held  # added back: a new module


def test_only_leaving_running_makes_dependents_follow() -> None:
    for state in S:
        for event in EVENTS.values():
            step = transition(LIVES[state], event, SETTINGS)
            follows = bool(_effects(step, lc.DependentsFollow))
            left = state is S.RUNNING and step.life.state is not S.RUNNING
            assert follows == left, (state, event)


DONE_EXIT = ("RecordExit", "Log", "Publish", "WakeWaiting")  # no error, no failed start


@pytest.mark.parametrize(
    ("state", "restart", "wait_status", "expected", "kinds"),
    [
        (S.RUNNING, "never", EXIT_0, S.DONE, (*DONE_EXIT, "DependentsFollow")),
        (S.STARTING, "never", EXIT_0, S.DONE, DONE_EXIT),  # a job finished in initialize()
        (
            S.RUNNING,
            "never",
            EXIT_1,
            S.STOPPED,
            ("RecordExit", "Log", "Publish", "Publish", "WakeWaiting", "DependentsFollow"),
        ),
        (S.STARTING, "on-failure", EXIT_0, S.STOPPED, ("RecordStart", *DONE_EXIT)),
        (S.RUNNING, "on-failure", EXIT_0, S.STOPPED, (*DONE_EXIT, "DependentsFollow")),
    ],
    ids=["never-0", "never-0-before-ready", "never-1", "on-failure-0-before-ready", "on-failure-0"],
)
def test_done_is_exit_0_with_restart_never(
    state: ChildState, restart: str, wait_status: int, expected: ChildState, kinds: tuple[str, ...]
) -> None:
    step = transition(LIVES[state], lc.Exited(NOW, wait_status), replace(SETTINGS, restart=restart))
    assert step.life.state is expected
    assert _kinds(step) == kinds
    assert (step.life.failed_spawn == LIVES[state].spawns) is (kinds[0] == "RecordStart")
