"""The child states and the restart policy, as pure functions: no clocks, no `os` calls. The
transitions between the states are `orchestrator.transition`'s.

    stopped -> starting -> running -> stopping -> stopped
    (exit) -> backoff -> starting        a crash, restarted after the policy's delay
    (exit) -> failed                     the restart limit is reached
    waiting -> starting                  held back by the process limit until a slot frees
    (exit 0) -> done                     `restart: never` and it finished by itself

`running` means the child said ready: `initialize()` returned and its bus is connected.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Sequence

from orchestrator.config import SupervisionSettings
from orchestrator.record import record


class ChildState(enum.Enum):
    """Where one module's process is in its life."""

    STOPPED = "stopped"
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    FAILED = "failed"
    DONE = "done"  # exited 0 by itself with `restart: never`: its work is done, not a failure

    @property
    def has_process(self) -> bool:
        """Whether a process exists in this state (it counts against the process limit)."""
        return self in (ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING)


class ExitReason(enum.Enum):
    """Why a child's process ended, as `status` shows it."""

    STOPPED = "stopped"  # we asked it to stop
    EXITED = "exited"  # it exited 0 by itself
    CRASHED = "crash"  # non-zero exit or killed by a signal we did not send
    LOAD_FAILED = "load failed"
    INIT_FAILED = "initialize failed"
    START_TIMEOUT = "start timeout"
    HUNG = "hung"
    MEMORY_LIMIT = "memory limit"
    UNHEALTHY = "unhealthy"  # its health() failed health_retries times in a row
    KERNEL_MEMORY_LIMIT = "memory limit (kernel)"  # the OOM killer, at its cgroup's memory.max

    @property
    def is_failure(self) -> bool:
        return self not in (ExitReason.STOPPED, ExitReason.EXITED)


@record
class ExitStatus:
    """How a process ended: `code` for a normal exit, `signal` when a signal killed it."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """Decode a raw `waitpid` status."""
        code = _waitstatus_to_exitcode(status)
        return cls(signal=-code) if code < 0 else cls(code=code)

    def describe(self) -> str:
        """`exit 1`, or `SIGKILL`."""
        if self.signal is not None:
            try:
                return signal.Signals(self.signal).name
            except ValueError:
                return f"signal {self.signal}"
        return f"exit {self.code}"


def _waitstatus_to_exitcode(status: int) -> int:
    import os  # noqa: PLC0415  (kept local: this module is otherwise free of os calls)

    return os.waitstatus_to_exitcode(status)


class Action(enum.Enum):
    """What the supervisor does after an exit."""

    STOP = "stop"  # stay stopped
    RESTART = "restart"  # start again after `delay`
    FAIL = "fail"  # give up until an operator restarts it


@record
class Decision:
    """The policy's answer: the next state, and how long to wait before starting again."""

    action: Action
    state: ChildState
    delay: float = 0.0
    why: str = ""


JITTER = 0.1  # up to 10% added to each backoff, so that modules failing together spread out


def backoff_delay(
    settings: SupervisionSettings, consecutive_failures: int, jitter: float = 0.0
) -> float:
    """The wait before restart number `consecutive_failures` (1-based) of a crash loop:
    `backoff_initial x backoff_multiplier^(n-1)` (what tenacity's `wait_exponential` computes),
    plus up to 10% scaled by `jitter` in [0, 1), capped at `backoff_max`. The formula, not
    tenacity: importing it cost the loop 20-35 ms at the first crash, and ~1 MB for good."""
    if consecutive_failures <= 0:
        return 0.0
    try:
        delay = settings.backoff_initial * settings.backoff_multiplier ** (consecutive_failures - 1)
        return min(delay * (1.0 + JITTER * jitter), settings.backoff_max)
    except OverflowError:
        return settings.backoff_max


def decide_after_exit(
    settings: SupervisionSettings,
    reason: ExitReason,
    *,
    stop_requested: bool,
    consecutive_failures: int,
    recent_restarts: Sequence[float],
    now: float,
    jitter: float = 0.0,
) -> Decision:
    """Apply the restart policy to one exit.

    Args:
        settings: the module's supervision settings.
        reason: why the process ended.
        stop_requested: the supervisor asked it to stop (`down`, `restart`, removal).
        consecutive_failures: failed runs in a row, this one included; a run that lasted
            `stable_after` seconds resets the count, so its first restart happens at once.
        recent_restarts: times (on the same clock as `now`) of earlier automatic restarts.
        now: the current time.
        jitter: a random number in [0, 1) that spreads the backoff (0 in tests).
    """
    if stop_requested:
        return Decision(Action.STOP, ChildState.STOPPED, why="stop requested")
    if settings.restart == "never":
        if reason is ExitReason.EXITED:
            return Decision(Action.STOP, ChildState.DONE, why="done (exit 0, restart: never)")
        return Decision(Action.STOP, ChildState.STOPPED, why="restart: never")
    if settings.restart == "on-failure" and not reason.is_failure:
        return Decision(Action.STOP, ChildState.STOPPED, why="exited cleanly (restart: on-failure)")
    in_window = [t for t in recent_restarts if now - t < settings.restart_window]
    if len(in_window) >= settings.max_restarts:
        return Decision(
            Action.FAIL,
            ChildState.FAILED,
            why=f"{len(in_window)} restarts within {settings.restart_window:g}s "
            f"(max_restarts {settings.max_restarts})",
        )
    delay = backoff_delay(settings, consecutive_failures - 1, jitter)
    return Decision(Action.RESTART, ChildState.BACKOFF, delay=delay, why=reason.value)
