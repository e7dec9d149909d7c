"""What the supervisor knows about one module: its state, its current process and its history."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from orchestrator.config import ModuleSpec, Redactor
from orchestrator.lifecycle import CIRCUIT_OPEN, Life
from orchestrator.output import ModuleLog
from orchestrator.processes import ModuleProcess
from orchestrator.states import ChildState, ExitReason, ExitStatus
from orchestrator.venv.environments import INSTALL_FAILED

if TYPE_CHECKING:
    from orchestrator.breaker import StartBreaker


@dataclass
class LastExit:
    """The end of the previous process: how, why, when, and the error it reported if any."""

    status: ExitStatus
    reason: ExitReason
    at: float  # unix time
    error: str = ""
    pid: int | None = None
    channel_id: bytes = b""  # what its reports came from (orchestrator/child_channel.py)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.status.code,
            "signal": self.status.signal,
            "description": self.status.describe(),
            "reason": self.reason.value,
            "time": self.at,
            "error": self.error,
            "pid": self.pid,
        }

    def cause(self) -> str:
        """This exit as one clause: `load failed: importing ... raised SyntaxError: ... (x.py,
        line 2)`, `initialize() raised ValueError: ...`, `crash (exit 1)`."""
        if not self.error:
            return f"{self.reason.value} ({self.status.describe()})"
        if self.reason is ExitReason.INIT_FAILED:  # the shim's message names the stage already
            return self.error
        return f"{self.reason.value}: {self.error}"


class ManagedChild:
    """One module under supervision. Only the supervisor's loop reads or writes it; its
    lifecycle (`life`) changes only by `orchestrator.transition.transition`."""

    def __init__(
        self, spec: ModuleSpec, log: ModuleLog, state: ChildState = ChildState.STOPPED
    ) -> None:
        self.spec = spec
        self.log = log
        self.life = Life(state=state)
        self.process: ModuleProcess | None = None
        self.started_wall = 0.0  # unix time of the current process's spawn
        self.last_heartbeat = 0.0  # monotonic
        self.busy_for = 0.0
        self.counters: dict[str, int] = {}
        self.last_exit: LastExit | None = None
        self.history: deque[LastExit] = deque(maxlen=20)
        self.breaker: StartBreaker | None = None  # created at the first failed start
        self.rss_mb: float | None = None  # the module and its descendants, at the last check
        self.reported_error = ""  # what the current process sent before failing
        self.last_words = ""  # the last line the process just reaped printed
        self.uncontained = False  # it could not join its cgroup: sweep for its strays at exit
        self.threads_granted: int | None = None  # callback threads its process was given
        self.cgroup = spec.name  # its cgroup's key (a graceful restart alternates two)
        self.stand_in = False  # holds the other process of a graceful restart (not listed)

    # The lifecycle's data, as status and commands read it (only tests set it this way).
    @property
    def state(self) -> ChildState:
        return self.life.state

    @state.setter
    def state(self, value: ChildState) -> None:
        self.life = replace(self.life, state=value)

    @property
    def deadline(self) -> float | None:
        """Monotonic: the start timeout, kill deadline, restart or re-check time."""
        return self.life.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.life = replace(self.life, deadline=value)

    @property
    def why(self) -> str:
        """A note for status: why it is waiting, failed, in backoff."""
        return self.life.why

    @why.setter
    def why(self, value: str) -> None:
        self.life = replace(self.life, why=value)

    @property
    def consecutive_failures(self) -> int:
        return self.life.consecutive_failures

    @consecutive_failures.setter
    def consecutive_failures(self, value: int) -> None:
        self.life = replace(self.life, consecutive_failures=value)

    @property
    def started_at(self) -> float:
        """Monotonic time the current process was spawned."""
        return self.life.started_at

    @property
    def ready_at(self) -> float | None:
        return self.life.ready_at

    @property
    def spawns(self) -> int:
        return self.life.spawns

    @property
    def failed_spawn(self) -> int:
        return self.life.failed_spawn

    @property
    def restarts(self) -> int:
        return self.life.restarts

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def status(self, now: float, sample: dict[str, float]) -> dict[str, Any]:
        """The row `orchestrator status` shows, as plain data."""
        running = self.state is ChildState.RUNNING and self.ready_at is not None
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": self.pid,
            "uptime": round(now - self.started_at, 3) if self.pid is not None else None,
            "started": self.started_wall if self.pid is not None else None,
            "restarts": self.restarts,
            "last_exit": self.last_exit.as_dict() if self.last_exit else None,
            "next_retry": round(self.deadline - now, 3)
            if self.state is ChildState.BACKOFF and self.deadline is not None
            else None,
            "heartbeat_age": round(now - self.last_heartbeat, 3) if running else None,
            "why": self.reason(now),
            "rss_mb": sample.get("rss_mb"),
            "cpu_percent": sample.get("cpu_percent"),
            "events_in": self.counters.get("events_in", 0),
            "events_out": self.counters.get("events_out", 0),
            "callback_errors": self.counters.get("callback_errors", 0),
            "bad_frames": self.counters.get("bad_frames", 0),
            "dropped": self.counters.get("dropped", 0),
            "retries": self.counters.get("retries", 0),
            "breaker_opens": self.counters.get("breaker_opens", 0),
            "concurrency": {
                "asked": self.spec.supervision.concurrency,
                "granted": self.threads_granted,
            },
            "log": str(self.log.path),
            "memory_limit_mb": self.spec.supervision.memory_limit_mb,
            "depends_on": list(self.spec.depends_on),
        }

    def reason(self, now: float) -> str:
        """Why the module is not running, in one line (empty while it runs): what `status` notes
        and `up -d` reports, e.g. `load failed: ... SyntaxError ...; retry in 2.0s (backoff)`."""
        state, last = self.state, self.last_exit
        failed = last is not None and last.reason.is_failure
        cause = last.cause() if last is not None and failed else ""
        if state is ChildState.RUNNING:
            return ""
        if state is ChildState.WAITING:
            return self.why
        if state is ChildState.BACKOFF:
            held = self.why if self.why.startswith(CIRCUIT_OPEN) else "backoff"
            deadline = self.deadline
            left = f"in {max(0.0, deadline - now):.1f}s" if deadline is not None else "soon"
            retry = f"retry {left} ({held})"
            return f"{cause}; {retry}" if cause else retry
        if self.why.startswith(CIRCUIT_OPEN):  # a scheduled run refused: see _refused_by_breaker
            return f"{cause}; {self.why}" if cause else self.why
        if state is ChildState.STARTING:
            if cause and self.consecutive_failures > 0:
                return f"{cause}; starting again (attempt {self.consecutive_failures + 1})"
            timeout = self.spec.supervision.start_timeout
            return f"starting, not ready yet (start_timeout {timeout:g}s)"
        if state is ChildState.FAILED and self.why.startswith(INSTALL_FAILED):
            return f"{self.why}; `orchestrator restart {self.name}` retries"
        if state is ChildState.FAILED:
            gave_up = f"gave up after {self.why}: `orchestrator restart {self.name}` retries"
            return f"{cause}; {gave_up}" if cause else gave_up
        if state is ChildState.STOPPED and cause:
            return f"{cause}; not restarted ({self.why})" if self.why else cause
        return self.why

    def details(self, redactor: Redactor, log_lines: int) -> dict[str, Any]:
        """What `orchestrator status NAME` adds: settings, restart history, the end of the log."""
        return {
            "path": str(self.spec.path),
            "config": redactor.redact(dict(self.spec.config)),
            "env": redactor.redact(dict(self.spec.env)),
            "supervision": asdict(self.spec.supervision),
            "history": [entry.as_dict() for entry in self.history],
            "circuit_open": bool(self.breaker and self.breaker.is_open),
            "log_tail": [redactor.scrub(line) for line in self.log.tail(log_lines)],
        }
