"""Scheduled modules (`schedule:` in modules.yaml): when each is due, and what a run is.

A module whose process exits when its work is done (a job) is started at each due time and its
run is that process, to its exit. A module that defines `run()` is started at its first due time
and stays up; each due time after that calls `run()` in it, over the child channel. A due time
while a run is in progress follows the module's `overlap:` (skip and count it, queue one more run,
or allow: call run() again; a job's process cannot run twice, so there allow queues).

The supervisor's loop asks `next_deadline()` for its poll timeout and calls `tick()` after each
turn; nothing here sleeps or blocks. Cron times are wall-clock times in the module's `timezone`;
`clock` (unix seconds) is injectable for tests.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from module_sdk.health import bounded_message
from orchestrator.config import AppConfig, ModuleSpec
from orchestrator.record import mutable_record
from orchestrator.states import ChildState

if TYPE_CHECKING:
    from orchestrator.child import ManagedChild
    from orchestrator.manager import ChildManager

log = logging.getLogger(__name__)

Clock = Callable[[], float]
_AT_REST = (ChildState.STOPPED, ChildState.FAILED, ChildState.DONE)  # no start is coming
SendRun = Callable[["ManagedChild", int], bool]  # ask a child to call run(); False: not sent
MAX_QUEUED = 1  # overlap: queue: runs waiting for the one in progress (more are skipped)
MAX_CALLS = 4  # overlap: allow: run() calls in progress in one module (more are skipped)
_CLOCK_STEP = 1.0  # seconds the wall clock may seem to go back before due times are redone
_FOLD_SKIPS = 4  # repeated wall times passed over in one search (one repeat a search, in practice)


def next_due(spec: ModuleSpec, after: float) -> float:
    """The first time (unix seconds) strictly after `after` that `spec.schedule` names, in the
    module's time zone (the machine's when it has none); infinity if croniter finds none (the
    config refuses such expressions: this is the loop's guard, never its crash).

    A fixed wall time (neither the minute nor the hour field is `*` or `*/n`) runs once on the
    day the clocks go back, at its first occurrence, as classic cron does: croniter would name
    it again an hour later. Hourly and every-N-seconds schedules run through the repeated hour."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415  (as croniter)

    from croniter import CroniterError, croniter  # noqa: PLC0415  (only with a schedule)

    assert spec.schedule is not None
    zone = ZoneInfo(spec.timezone) if spec.timezone else machine_zone()
    fixed = fixed_wall_time(spec.schedule)
    try:
        for _ in range(_FOLD_SKIPS):
            start = datetime.fromtimestamp(after, zone).astimezone(zone)
            due = float(croniter(spec.schedule, start).get_next(float))
            repeat = _repeated_until(due, zone) if fixed else None
            if repeat is None:
                return due
            after = repeat - 1  # (due times are whole seconds) the first after the repeat
        return due
    except (CroniterError, ValueError, OverflowError) as exc:
        log.error("%s: schedule %r names no time to come: %s", spec.name, spec.schedule, exc)
        return math.inf


def machine_zone() -> tzinfo | None:
    """The machine's time zone with its rules (`TZ`, else /etc/localtime), so that due times
    follow its changes of offset; None (its offset of the moment) if neither names one. Read
    each time: a schedule without `timezone:` follows the machine's as it is set."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415  (as croniter)

    if os.environ.get("TZ") == "":  # set and empty: UTC, as the C library takes it
        return UTC
    name = os.environ.get("TZ", "").removeprefix(":")
    try:
        if name and not name.startswith("/"):
            return ZoneInfo(name)
        with open(name or "/etc/localtime", "rb") as rules:
            return ZoneInfo.from_file(rules)
    except (OSError, ValueError, ZoneInfoNotFoundError):  # a POSIX TZ rule, no file
        return None


def fixed_wall_time(expression: str) -> bool:
    """Whether the cron `expression` names fixed wall times: its minute and hour fields are
    neither `*` nor `*/n` (Vixie cron's rule for running such a job once when clocks go back)."""
    minute, hour = expression.split()[:2]
    return not (minute.startswith(("*", "?")) or hour.startswith(("*", "?")))


def _repeated_until(moment: float, zone: tzinfo | None) -> float | None:
    """If `moment` (unix seconds) is the second occurrence of its wall time in `zone` (the
    hour the clocks go back repeats), the first unix second after that repeat; else None."""
    local = datetime.fromtimestamp(moment, zone)  # without a zone: the machine's, fold set
    first = local.replace(fold=0).timestamp()
    if local.fold == 0 or first >= moment:
        return None
    low, high = int(moment), int(moment + (moment - first)) + 1  # in the repeat; after it
    while high - low > 1:  # the repeat ends at a whole second
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).fold:
            low = middle
        else:
            high = middle
    return float(high)


@mutable_record
class _Run:
    """A run in progress: a job's process (`spawns` before it started), or a run() call."""

    seq: int
    started: float  # unix time
    spawns: int  # the child's spawn count when the run began
    call: int | None = None  # the run() request's id, once sent


@mutable_record
class Schedule:
    """One scheduled module's times and record, as `status` shows them."""

    spec: ModuleSpec
    due: float  # unix time of the next run
    runs: int = 0
    skipped: int = 0
    queued: int = 0  # runs waiting for the one in progress (overlap: queue)
    last_run: float | None = None
    last_result: str | None = None  # ok, or why it failed
    last_seconds: float | None = None
    active: list[_Run] = field(default_factory=list)
    finished: int = 0  # the seq of the latest finished run
    can_run: bool = False  # its process said it defines run()

    def as_dict(self) -> dict[str, Any]:
        return {
            "cron": self.spec.schedule,
            "timezone": self.spec.timezone,
            "overlap": self.spec.overlap,
            "next_run": self.due if math.isfinite(self.due) else None,
            "last_run": self.last_run,
            "last_result": self.last_result,
            "last_seconds": self.last_seconds,
            "runs": self.runs,
            "skipped": self.skipped,
            "queued": self.queued,
            "running": bool(self.active),
            "mode": "run()" if self.can_run else "process",
        }


class Scheduler:
    """Fires each scheduled module of the manager's config at its times."""

    def __init__(self, manager: ChildManager, send_run: SendRun, clock: Clock = time.time) -> None:
        self._manager = manager
        self._send_run = send_run
        self._clock = clock
        self._config: AppConfig | None = None
        self.schedules: dict[str, Schedule] = {}
        self._seq = 0
        self._last_wall: float | None = None

    def _sync(self) -> None:
        """Follow the manager's config (a reload replaces it): new schedules, changed ones get a
        new due time, removed ones go; the record of one kept stays, with its runs in progress
        (`orchestrator run` waits for one)."""
        config = self._manager.config
        if config is self._config:
            return
        self._config = config
        now, kept = self._clock(), {}
        for spec in config.enabled_modules:
            if spec.schedule is None:
                continue
            old = self.schedules.get(spec.name)
            if old is None:
                kept[spec.name] = Schedule(spec, next_due(spec, now))
                continue
            if (old.spec.schedule, old.spec.timezone) != (spec.schedule, spec.timezone):
                old.due = next_due(spec, now)
            old.spec = spec
            kept[spec.name] = old
        self.schedules = kept

    def next_deadline(self) -> float | None:
        """Monotonic time of the next due run, or None without schedules."""
        self._sync()
        if not self.schedules:
            return None
        soonest = min(s.due for s in self.schedules.values())
        return time.monotonic() + max(0.0, soonest - self._clock())

    def tick(self, now: float | None = None) -> None:
        """After a loop turn: notice finished runs, then fire what is due (`now`: unix time)."""
        self._sync()
        wall = self._clock() if now is None else now
        if self._last_wall is not None and wall < self._last_wall - _CLOCK_STEP:
            # The wall clock went back (NTP, by hand): due times computed from the later time
            # would hold every schedule for as long as the step.
            log.warning("the wall clock went back %.1fs: due times redone", self._last_wall - wall)
            for schedule in self.schedules.values():
                schedule.due = min(schedule.due, next_due(schedule.spec, wall))
        self._last_wall = wall
        for name, schedule in self.schedules.items():
            if not schedule.active and wall < schedule.due:
                continue  # the common case: nothing to follow, nothing due
            child = self._manager.children.get(name)
            if child is None:
                continue
            self._follow(schedule, child)
            if wall >= schedule.due:
                # Missed times (a stopped loop) are not made up: the next is after now.
                schedule.due = next_due(schedule.spec, wall)
                if not self._manager.shutting_down:  # a run would only end "not started"
                    self.fire(name)

    def fire(self, name: str) -> int | None:
        """A due time (or `orchestrator run`): start a run unless `overlap` says otherwise.
        Returns the run's number, or None if it was skipped (or queued: see `queued_run`)."""
        self._sync()
        schedule, child = self.schedules.get(name), self._manager.children.get(name)
        if schedule is None or child is None:
            return None
        overlap = schedule.spec.overlap
        calls = overlap == "allow" and self._callable(schedule, child)
        if schedule.active and not (calls and len(schedule.active) < MAX_CALLS):
            if overlap == "skip" or calls or schedule.queued >= MAX_QUEUED:
                schedule.skipped += 1
                why = "overlap: skip" if overlap == "skip" else "one is queued already"
                if calls:
                    why = f"{MAX_CALLS} run() calls in progress"
                log.info("%s: a run is in progress; this one is skipped (%s)", name, why)
                return None
            schedule.queued += 1
            return None
        return self._begin(schedule, child)

    def _callable(self, schedule: Schedule, child: ManagedChild) -> bool:
        return schedule.can_run and child.state is ChildState.RUNNING

    def _begin(self, schedule: Schedule, child: ManagedChild) -> int:
        self._seq += 1
        # A process already there (starting, say) is this run's: count from before it.
        spawns = child.spawns - 1 if child.state.has_process else child.spawns
        run = _Run(self._seq, self._clock(), spawns)
        schedule.active.append(run)
        schedule.last_run = run.started
        log.info("%s: run %d begins", child.name, run.seq)
        if self._callable(schedule, child):
            self._call(run, child)
        elif not child.state.has_process:
            self._manager.start(child, scheduled=True)
            if child.spawns == run.spawns and child.state in _AT_REST:  # refused: say so now
                self._finish(schedule, run, child, self._not_started(child))
        return run.seq

    def _call(self, run: _Run, child: ManagedChild) -> None:
        if self._send_run(child, run.seq):
            run.call, run.spawns = run.seq, child.spawns  # this process's call

    def _follow(self, schedule: Schedule, child: ManagedChild) -> None:
        """Finish the runs whose process exited (or whose module died in run()); ask a module
        that became ready and defines run() for the run it was started for."""
        for run in list(schedule.active):
            if run.call is not None:
                if child.state is not ChildState.RUNNING or child.spawns != run.spawns:
                    self._finish(schedule, run, child, "lost: the module stopped during run()")
            elif self._callable(schedule, child):
                self._call(run, child)
            elif child.spawns > run.spawns and not child.state.has_process:
                self._finish(schedule, run, child, self._exit_result(child))
            elif child.spawns == run.spawns and child.state in _AT_REST:
                self._finish(schedule, run, child, self._not_started(child))

    def _not_started(self, child: ManagedChild) -> str:
        return f"not started: {child.reason(time.monotonic()) or child.state.value}"

    def _exit_result(self, child: ManagedChild) -> str:
        last = child.last_exit
        if last is None:
            return "not started"
        if last.status.code == 0 and not last.reason.is_failure:
            return "ok"
        return last.cause()

    def _finish(self, schedule: Schedule, run: _Run, child: ManagedChild, result: str) -> None:
        schedule.active.remove(run)
        schedule.runs += 1
        schedule.finished = max(schedule.finished, run.seq)
        schedule.last_result = result
        schedule.last_seconds = round(self._clock() - run.started, 3)
        level = logging.INFO if result == "ok" else logging.WARNING
        log.log(level, "%s: run %d ended: %s", child.name, run.seq, result)
        if schedule.queued and not schedule.active:
            schedule.queued -= 1
            self._begin(schedule, child)

    # -- what the child channel hears -----------------------------------------------------------

    def ready(self, child: ManagedChild, *, can_run: bool) -> None:
        """`child` is ready; `can_run`: its module defines run()."""
        schedule = self.schedules.get(child.name)
        if schedule is not None:
            schedule.can_run = can_run
            self._follow(schedule, child)

    def result(self, child: ManagedChild, message: dict[str, Any]) -> None:
        """A run() call ended (the message is the child's: checked field by field)."""
        schedule = self.schedules.get(child.name)
        run_id = message.get("id")
        if schedule is None or not isinstance(run_id, int) or isinstance(run_id, bool):
            return
        run = next((r for r in schedule.active if r.call == run_id), None)
        if run is None:
            return
        error = message.get("error")
        ok = message.get("ok") is True
        said = str(error)[:600] if error else "run() failed"
        result = "ok" if ok else bounded_message(self._manager.redactor.scrub(said), 300)
        self._finish(schedule, run, child, result)

    def status(self, name: str) -> dict[str, Any] | None:
        """The `schedule` of module `name`'s status row (None: it has none)."""
        self._sync()
        schedule = self.schedules.get(name)
        return schedule.as_dict() if schedule is not None else None

    def outcome(self, name: str, seq: int) -> str | None:
        """How run `seq` of `name` ended, once it has (the latest result: runs end in order
        unless overlap allows them not to)."""
        schedule = self.schedules.get(name)
        if schedule is None:
            return "the module is no longer scheduled"
        return schedule.last_result if schedule.finished >= seq else None
