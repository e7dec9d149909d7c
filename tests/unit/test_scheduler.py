"""The scheduler without processes: a clock we move, a manager that only records starts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.child import LastExit, ManagedChild
from orchestrator.config import AppConfig, LoggingSection, ModuleSpec, Redactor
from orchestrator.output import ModuleLog
from orchestrator.scheduler import Scheduler
from orchestrator.states import ChildState, ExitReason, ExitStatus

T0 = 1_000_000.0  # a whole 10 s


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeManager:
    """What the scheduler uses of a ChildManager: a start spawns at once."""

    def __init__(self, tmp_path: Path, **schedule: Any) -> None:
        spec = ModuleSpec(
            name="job", path=tmp_path / "job.py", schedule="* * * * * */10", **schedule
        )
        self.config = AppConfig(
            config_dir=tmp_path,
            main_file=tmp_path / "m",
            modules_file=tmp_path / "n",
            modules=(spec,),
        )
        log = ModuleLog("job", LoggingSection(directory=tmp_path), Redactor(()), echo=False)
        self.child = ManagedChild(spec, log)
        self.children = {"job": self.child}
        self.redactor = Redactor(["s3cret"])
        self.starts = 0
        self.shutting_down = False

    def start(self, child: ManagedChild, *, scheduled: bool = False) -> bool:
        assert scheduled
        self.starts += 1
        child.life = replace(child.life, state=ChildState.STARTING, spawns=child.spawns + 1)
        return True

    def exit(self, code: int) -> None:
        reason = ExitReason.EXITED if code == 0 else ExitReason.CRASHED
        self.child.last_exit = LastExit(ExitStatus(code=code), reason, 0.0)
        state = ChildState.DONE if code == 0 else ChildState.STOPPED
        self.child.life = replace(self.child.life, state=state)


def _scheduler(tmp_path: Path, **schedule: Any) -> tuple[Scheduler, FakeManager, Clock, list[int]]:
    manager, clock, sent = FakeManager(tmp_path, **schedule), Clock(), []

    def send_run(child: ManagedChild, run_id: int) -> bool:
        sent.append(run_id)
        return True

    return Scheduler(manager, send_run, clock), manager, clock, sent  # type: ignore[arg-type]


def test_due_times_fire_once_each_and_missed_ones_are_not_made_up(tmp_path: Path) -> None:
    scheduler, manager, clock, _ = _scheduler(tmp_path)
    scheduler.tick()
    assert manager.starts == 0 and scheduler.status("job")["next_run"] == T0 + 10  # type: ignore[index]
    clock.now = T0 + 9.99
    scheduler.tick()
    assert manager.starts == 0
    clock.now = T0 + 10
    scheduler.tick()
    assert manager.starts == 1
    manager.exit(0)
    clock.now = T0 + 95  # the loop stalled across 8 due times
    scheduler.tick()
    status = scheduler.status("job")
    assert status is not None
    assert manager.starts == 2 and status["next_run"] == T0 + 100
    assert (status["runs"], status["last_result"], status["skipped"]) == (1, "ok", 0)


def test_no_run_begins_while_the_supervisor_stops(tmp_path: Path) -> None:
    # During `down`, a due time logged "run 1 begins", then "ended: not started: stopped", and
    # counted a failed run.
    scheduler, manager, clock, _ = _scheduler(tmp_path)
    scheduler.tick()
    manager.shutting_down = True
    clock.now = T0 + 10
    scheduler.tick()
    status = scheduler.status("job")
    assert status is not None
    assert manager.starts == 0 and status["runs"] == 0 and not status["running"]


@pytest.mark.parametrize("overlap", ["skip", "queue", "allow"])
def test_a_due_time_during_a_run_follows_overlap(tmp_path: Path, overlap: str) -> None:
    scheduler, manager, _clock, _ = _scheduler(tmp_path, overlap=overlap)
    assert scheduler.fire("job") == 1
    assert scheduler.fire("job") is None  # a job's process cannot run twice: allow queues
    assert scheduler.fire("job") is None
    status = scheduler.status("job")
    assert status is not None and status["running"]
    # One run waits at most (queue, or allow for a job): the next due time is skipped.
    assert (status["skipped"], status["queued"]) == ((2, 0) if overlap == "skip" else (1, 1))
    manager.exit(1)
    scheduler.tick()
    status = scheduler.status("job")
    assert status is not None and status["runs"] == 1 and "crash" in status["last_result"]
    assert manager.starts == (1 if overlap == "skip" else 2)  # a queued run follows at once


def test_run_is_called_in_a_running_module_and_its_result_checked(tmp_path: Path) -> None:
    scheduler, manager, _clock, sent = _scheduler(tmp_path, overlap="allow")
    scheduler.tick()
    assert scheduler.fire("job") == 1  # not running yet: it is started
    manager.child.life = replace(manager.child.life, state=ChildState.RUNNING)
    scheduler.ready(manager.child, can_run=True)
    assert sent == [1]
    assert scheduler.fire("job") == 2 and sent == [1, 2]  # allow: a second call meanwhile
    for garbage in ({"id": "1"}, {"id": None}, {"id": 99, "ok": True}, {}, {"id": True}):
        scheduler.result(manager.child, garbage)
    assert scheduler.outcome("job", 1) is None
    scheduler.result(manager.child, {"id": 1, "ok": False, "error": "boom s3cret " + "x" * 5000})
    result = scheduler.outcome("job", 1)
    assert result is not None and result.startswith("boom ***") and len(result) < 400
    manager.child.life = replace(manager.child.life, state=ChildState.STOPPED)
    scheduler.tick()  # it died during run 2
    assert scheduler.outcome("job", 2) == "lost: the module stopped during run()"
    assert manager.starts == 1


def test_a_reload_keeps_the_record_of_an_unchanged_schedule(tmp_path: Path) -> None:
    scheduler, manager, _clock, _ = _scheduler(tmp_path, overlap="skip")
    scheduler.fire("job")
    scheduler.fire("job")
    spec = replace(manager.config.modules[0], overlap="queue")
    manager.config = replace(manager.config, modules=(spec,))
    status = scheduler.status("job")
    assert status is not None and status["skipped"] == 1 and status["overlap"] == "queue"
    manager.config = replace(manager.config, modules=())
    assert scheduler.status("job") is None and scheduler.next_deadline() is None


def test_run_calls_at_once_are_bounded_under_allow(tmp_path: Path) -> None:
    """A run() that hangs, due every second: a thread in the module and a record in the loop
    for each, for ever, unless bounded."""
    from orchestrator.scheduler import MAX_CALLS

    scheduler, manager, _clock, sent = _scheduler(tmp_path, overlap="allow")
    scheduler.tick()
    manager.child.life = replace(manager.child.life, state=ChildState.RUNNING)
    scheduler.ready(manager.child, can_run=True)
    for _ in range(MAX_CALLS + 3):
        scheduler.fire("job")
    status = scheduler.status("job")
    assert status is not None and len(sent) == MAX_CALLS and status["skipped"] == 3


def test_a_schedule_that_names_no_time_to_come_never_fires_and_never_raises(
    tmp_path: Path,
) -> None:
    scheduler, manager, _clock, _ = _scheduler(tmp_path)
    spec = replace(manager.config.modules[0], schedule="0 0 30 2 *")
    manager.config = replace(manager.config, modules=(spec,))
    scheduler.tick()  # raised CroniterBadDateError in the supervisor's loop, which died of it
    status = scheduler.status("job")
    assert status is not None and status["next_run"] is None and manager.starts == 0
    from orchestrator.cli.status import schedule_note

    assert "next run never" in schedule_note(status)


def test_a_wall_clock_that_goes_back_does_not_hold_the_schedules(tmp_path: Path) -> None:
    scheduler, manager, clock, _ = _scheduler(tmp_path)
    clock.now = T0 + 3600
    scheduler.tick()  # due T0 + 3610
    clock.now = T0  # an hour back: the next due time is T0 + 10, not in an hour
    scheduler.tick()
    clock.now = T0 + 10
    scheduler.tick()
    assert manager.starts == 1


def test_a_changed_schedule_keeps_its_run_in_progress(tmp_path: Path) -> None:
    """`orchestrator run` waits for its run's outcome: a reload that changed the cron
    expression dropped the run, and the command waited out its timeout."""
    scheduler, manager, _clock, _ = _scheduler(tmp_path)
    assert scheduler.fire("job") == 1
    spec = replace(manager.config.modules[0], schedule="*/5 * * * *")
    manager.config = replace(manager.config, modules=(spec,))
    scheduler.tick()
    manager.exit(0)
    scheduler.tick()
    assert scheduler.outcome("job", 1) == "ok"
    status = scheduler.status("job")
    assert status is not None and status["cron"] == "*/5 * * * *" and status["runs"] == 1
