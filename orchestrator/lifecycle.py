"""A module's life as plain values: its state data (`Life`), the events that move it and the
effects that the `ChildManager` carries out. The rules that connect them are
`orchestrator.transition.transition`; nothing here touches a clock or a process.

    stopped/waiting/backoff/failed --start--> starting --ready--> running
    starting/running --stop--> stopping --exited--> stopped (or starting again, or forgotten)
    starting/running --exited--> backoff --due--> starting, or failed, or stopped (the policy)
    waiting --a dependency runs, a slot frees--> starting
    (spawn refused by the host: EAGAIN, ENOMEM) --> waiting --its backoff is due--> starting
    running --leaves--> each dependent follows (`DependencyDown`): restart (stops, then waits),
                        stop (held stopped), or ignore
    any --hold (`stop NAME`, a dependency's on_failure: stop)--> stopped, held until released

What follows a stop we asked for is the stop's `Intent`; a SIGKILL we sent is `Life.kill`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import field
from typing import Any

from orchestrator.record import record
from orchestrator.states import ChildState, ExitReason, ExitStatus


class Intent(enum.Enum):
    """What a stop we asked for leads to once the process has exited."""

    NONE = "none"  # no stop asked for: the restart policy decides
    STOP = "stop"  # stay stopped (`down`, a shutdown)
    RESTART = "restart"  # start again at once (`restart NAME`, a changed config)
    REMOVE = "remove"  # a reload removed the module: forget it
    WAIT = "wait"  # a dependency went down: start again once the dependencies run


@record
class Life:
    """Everything the lifecycle decides on, for one module. Times are monotonic seconds."""

    state: ChildState = ChildState.STOPPED
    intent: Intent = Intent.NONE
    kill: ExitReason | None = None  # SIGKILLed for this reason: only its exit is awaited
    kill_error: str = ""  # what the failed health check said, for the exit it causes
    deadline: float | None = None  # start timeout, stop (kill) deadline, restart or re-check time
    why: str = ""  # a note for status: why it is waiting, failed, in backoff
    started_at: float = 0.0  # when the current process was spawned
    ready_at: float | None = None  # when it said ready
    spawns: int = 0  # processes started so far; a process's generation
    failed_spawn: int = 0  # the generation of the latest start that never became ready
    refused_forks: int = 0  # starts in a row the host refused a process (its own backoff)
    restarts: int = 0  # automatic and requested restarts
    consecutive_failures: int = 0
    restart_times: tuple[float, ...] = ()  # automatic restarts, the latest 64
    held: str = ""  # kept stopped for this reason until released (`start`/`restart NAME`)
    # A stop asked for waits, the module still running, until its dependents have stopped
    # (`DependentsStopped`); meanwhile they count it as not running.
    draining: bool = False

    @property
    def stopping_on_request(self) -> bool:
        """A stop was asked for (of a process that may still be running): not yet while it
        drains (its process was not told to stop, so an exit then is its own)."""
        return self.intent is not Intent.NONE and not self.draining


# -- events --------------------------------------------------------------------------------------


@record
class Gate:
    """What may hold a start back, as the manager found it: a shutdown, the start breaker's
    remaining hold (seconds), or the reason another module or a limit blocks it; `failed`: it
    cannot start until an operator's restart (its dependencies did not install)."""

    shutting_down: bool = False
    hold: float = 0.0
    failures: int = 0  # the failed starts in a row that the breaker counted, with `hold`
    blocked: str | None = None
    failed: str | None = None


@record
class StartRequested:
    """Start the module if nothing holds it back. `announce`: a restart, published as
    `module.restarted` once spawned; `count`: count a restart once spawned; `scheduled`: a
    scheduled run's start, which an open start breaker refuses rather than defers."""

    now: float
    gate: Gate
    announce: bool = False
    count: bool = False
    scheduled: bool = False


@record
class DependencyChanged:
    """Another module's state changed (it runs, stopped, was removed) or a limit freed: a
    waiting module tries again."""

    now: float
    gate: Gate


@record
class Spawned:
    """Its process `pid` exists (the start's `announce` and `count` carried over)."""

    now: float
    pid: int
    announce: bool = False
    count: bool = False


@record
class SpawnFailed:
    """No process could be started (`error`: the OS's reason). `host`: the OS refused a new
    process (EAGAIN: no task slot left, ENOMEM), the host's condition for a while, not the
    module's failure: it waits and tries again with a backoff, not counted against it."""

    now: float
    error: str
    shutting_down: bool = False
    jitter: float = 0.0
    host: bool = False


@record
class Ready:
    """The child said ready: `initialize()` returned and its bus is connected."""

    now: float
    pid: int | None
    contained: bool
    config: dict[str, Any] = field(default_factory=dict)  # redacted, for `module.loaded`


@record
class Exited:
    """Its process was reaped with the raw wait status `wait_status`; `error`: what it reported.
    `jitter` in [0, 1) spreads a backoff. `scheduled`: the module has a schedule, so an exit 0
    before it said ready is a job's run done, whatever its restart policy. `bus_outage`: the
    broker was down or silent for part of its start, so that it had the broker for less than
    half a handshake window: a start that could not prove its bus then (exit 72, or the start
    timeout) is not counted against it, and it starts again once the broker runs."""

    now: float
    wait_status: int
    error: str = ""
    shutting_down: bool = False
    jitter: float = 0.0
    scheduled: bool = False
    bus_outage: bool = False  # it had the broker for less than half a handshake window


@record
class BreakerHold:
    """The start breaker, asked after a failed run: seconds until a start may be tried, and the
    failed starts it counted."""

    now: float
    hold: float
    failures: int


@record
class Due:
    """The loop woke at `now`: whatever deadline has passed is acted on."""

    now: float


@record
class StopRequested:
    """Stop it (SIGTERM, then SIGKILL after `timeout`, by default its `stop_timeout`)."""

    now: float
    timeout: float | None = None


@record
class RestartRequested:
    """An operator's restart (or a changed config): forget past failures, stop, start again.
    `revive`: a module a reload removed comes back before its old process stopped."""

    now: float
    revive: bool = False
    release: bool = False  # an operator's: a held module starts too (a reload's does not)
    drain: bool = False  # dependents that follow it have a process: they stop first


@record
class DependencyDown:
    """`dependency`, which this module depends on, stopped running; `policy` is this edge's
    `on_failure`: `restart` (stop, start again once it runs), `stop` (held stopped) or
    `ignore`."""

    now: float
    dependency: str
    policy: str
    drain: bool = False  # its own dependents that follow have a process: they stop first


@record
class HoldRequested:
    """Stop it and keep it stopped, for `why`, until released (`orchestrator stop NAME`)."""

    now: float
    why: str
    drain: bool = False  # dependents that follow it have a process: they stop first


@record
class DependentsStopped:
    """The dependents that follow this draining module have no process any more: the stop it
    waited with goes on now."""

    now: float


@record
class ReleaseRequested:
    """Let a held module start again, and start it (`orchestrator start NAME`)."""

    now: float


@record
class RemoveRequested:
    """A reload removed the module: stop it, then forget it."""

    now: float


@record
class ShutdownBegan:
    """The supervisor stops everything: a module without a process is stopped now."""


@record
class KillRequested:
    """SIGKILL it now (the shutdown's deadline passed)."""

    reason: ExitReason


@record
class HealthFailed:
    """A health check failed while it ran: no heartbeat (hung), over its memory limit, or its
    own `health()` failing (`message`: what it said)."""

    reason: ExitReason
    message: str = ""


@record
class Stalled:
    """The supervisor's own loop did not run for `seconds`: that silence was not the module's."""

    now: float
    seconds: float


Event = (
    StartRequested
    | DependencyChanged
    | Spawned
    | SpawnFailed
    | Ready
    | Exited
    | BreakerHold
    | Due
    | StopRequested
    | RestartRequested
    | DependencyDown
    | HoldRequested
    | DependentsStopped
    | ReleaseRequested
    | RemoveRequested
    | ShutdownBegan
    | KillRequested
    | HealthFailed
    | Stalled
)

# -- effects -------------------------------------------------------------------------------------


@record
class TryStart:
    """Find what may hold a start back (the `Gate`) and hand it back as `StartRequested`."""

    announce: bool = False
    count: bool = False


@record
class Spawn:
    """Launch a process; hand back `Spawned` or `SpawnFailed`."""

    announce: bool = False
    count: bool = False


@record
class Signal:
    """Signal the process group: `term` is SIGTERM then SIGCONT (a SIGSTOPped process would hold
    the TERM pending, as systemd knows), otherwise SIGKILL."""

    term: bool


@record
class Publish:
    """Publish `event_type` with `name` and `data`."""

    event_type: str
    data: dict[str, Any]


class Ref(enum.Enum):
    """Stands in a `Log`'s arguments for what the manager knows, not the lifecycle."""

    NAME = "name"
    PID = "pid"


NAME, PID = Ref.NAME, Ref.PID


@record
class Log:
    """Log `message % (name, *args)` at `level`; a `Ref` in `args` is filled in."""

    level: int
    message: str
    args: tuple[Any, ...] = ()


@record
class RecordExit:
    """Keep how the process ended (its last exit and history) and drop the process."""

    status: ExitStatus
    reason: ExitReason
    error: str


@record
class RecordStart:
    """Feed the start breaker the outcome of one start (created at the first failure)."""

    started: bool


@record
class AskBreaker:
    """Ask the start breaker how long it holds starts back; hand back `BreakerHold`."""


@record
class ResetBreaker:
    """Close the start breaker (an operator asked for a restart)."""


@record
class Running:
    """It runs: its heartbeat window starts at `now`; note whether it joined its cgroup."""

    now: float
    contained: bool | None = None  # None: a fresh heartbeat window only


@record
class Forget:
    """Drop the module (a reload removed it and it has no process)."""


@record
class WakeWaiting:
    """Other modules may wait on this one: hand each `DependencyChanged`."""


@record
class DependentsFollow:
    """It stopped running (or it drains: it stops once they have): hand each module that
    depends on it `DependencyDown`, with that edge's policy (not while the supervisor shuts
    down: the shutdown orders the stops)."""


Effect = (
    TryStart
    | Spawn
    | Signal
    | Publish
    | Log
    | RecordExit
    | RecordStart
    | AskBreaker
    | ResetBreaker
    | Running
    | Forget
    | WakeWaiting
    | DependentsFollow
)


@record
class Step:
    """A transition's result: the new state data and the effects to carry out, in order."""

    life: Life
    effects: tuple[Effect, ...] = ()


DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
CIRCUIT_OPEN = "circuit open"  # how `Life.why` begins while the start breaker holds starts back
