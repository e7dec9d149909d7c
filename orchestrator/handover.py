"""Graceful restarts (`orchestrator restart NAME --graceful`): the module's new process starts
beside the old one, and the old one is stopped only once the new one is ready, so a module that
serves requests is never absent. Until then the new process belongs to a stand-in
`ManagedChild` (same name and log, `restart: never`, its own cgroup), driven by the same
transition function; at the hand-over the two swap processes: the module keeps its state
(`running` throughout, so its dependents do not follow), the stand-in stops the old process.
If the new process never becomes ready, the old one keeps running, untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.states import ChildState

log = logging.getLogger(__name__)

Handle = Callable[[ManagedChild, lc.Event], None]
Publish = Callable[..., None]
NEXT_CGROUP = "~next"  # a suffix no module name has (`~` is not allowed in one)


@dataclass
class Handover:
    """One graceful restart under way: `child` the module, `stand_in` the other process's.
    `outcome` is None until it is over: then "" (handed over, the old process gone) or why the
    new process did not take over."""

    child: ManagedChild
    stand_in: ManagedChild
    old_pid: int | None
    outcome: str | None = None
    handed_over: bool = False


class Handovers:
    """The graceful restarts under way, by module name."""

    def __init__(self, handle: Handle, by_pid: dict[int, ManagedChild], publish: Publish) -> None:
        self._handle = handle
        self._by_pid = by_pid
        self._publish = publish
        self._under_way: dict[str, Handover] = {}

    def stand_ins(self) -> list[ManagedChild]:
        """Every stand-in (its process starting, or the old one stopping)."""
        return [handover.stand_in for handover in self._under_way.values()]

    def begin(self, child: ManagedChild) -> Handover | str:
        """Start `child`'s new process beside its running one; the handover, or why not."""
        if child.name in self._under_way:
            return f"a graceful restart of {child.name} is already under way"
        if child.state is not ChildState.RUNNING or child.pid is None:
            return f"{child.name} is {child.state.value}, not running: use `restart` instead"
        if _leaving(child):
            return f"{child.name} is being stopped: use `restart` instead"
        never = replace(child.spec.supervision, restart="never")
        stand_in = ManagedChild(replace(child.spec, supervision=never), child.log)
        stand_in.stand_in = True
        stand_in.cgroup = _other_cgroup(child)
        handover = Handover(child, stand_in, child.pid)
        self._under_way[child.name] = handover
        log.info(
            "%s: graceful restart: starting a new process beside pid %d", child.name, child.pid
        )
        self._handle(stand_in, lc.StartRequested(time.monotonic(), lc.Gate()))
        if stand_in.pid is None:  # it could not even be spawned
            self._end(handover, _cause(stand_in, "could not be started"))
        return handover

    def ready(self, stand_in: ManagedChild) -> None:
        """The stand-in's new process is ready: hand it to the module, stop the old one."""
        handover = self._find(stand_in)
        if handover is None or handover.handed_over or stand_in.state is not ChildState.RUNNING:
            return
        child, now = handover.child, time.monotonic()
        if (
            child.state is not ChildState.RUNNING
            or child.pid != handover.old_pid
            or _leaving(child)
        ):
            # The old process went meanwhile (a crash, a stop), or is being killed (hung, over its
            # memory limit, unhealthy) or stopped: its own policy goes on, not the new process.
            self._handle(stand_in, lc.StopRequested(now))
            self._end(handover, "the old process stopped running during the graceful restart")
            return
        new, old = stand_in.process, child.process
        if new is None or old is None:  # pragma: no cover (both have their process here)
            return
        child.process, stand_in.process = new, old
        self._by_pid[new.pid], self._by_pid[old.pid] = child, stand_in
        child.cgroup, stand_in.cgroup = stand_in.cgroup, child.cgroup
        child.started_wall, stand_in.started_wall = stand_in.started_wall, child.started_wall
        child.counters, child.reported_error, child.busy_for = {}, "", 0.0
        child.last_heartbeat = now
        child.life = replace(
            child.life,
            started_at=stand_in.started_at,
            ready_at=stand_in.ready_at,
            spawns=child.spawns + 1,
            restarts=child.restarts + 1,
            consecutive_failures=0,
            restart_times=(),
        )
        handover.handed_over = True
        log.info(
            "%s: graceful restart: pid %d is ready; stopping the old pid %d",
            child.name,
            new.pid,
            old.pid,
        )
        self._publish(
            "module.restarted", name=child.name, pid=new.pid, restarts=child.restarts, graceful=True
        )
        self._handle(stand_in, lc.StopRequested(now))

    def check(self, child: ManagedChild) -> None:
        """After any event of module `child`: if its old process stopped running, or is being
        stopped or killed, before the new one took over, the new process is stopped at once.
        (It ran on, unseen by `status`, to its start timeout or its ready, handling events.)"""
        handover = self._under_way.get(child.name)
        if (
            handover is None
            or handover.child is not child
            or handover.handed_over
            or handover.outcome is not None
        ):
            return
        old_runs_on = child.state is ChildState.RUNNING and child.pid == handover.old_pid
        if old_runs_on and not _leaving(child):
            return
        self._handle(handover.stand_in, lc.StopRequested(time.monotonic()))
        asked = _overtaken_by(child)  # an operator's stop or restart is no failure to log as one
        if asked:
            self._end(handover, f"{asked} during the graceful restart", logging.INFO)
        else:
            self._end(handover, "the old process stopped running during the graceful restart")

    def exited(self, stand_in: ManagedChild) -> None:
        """The stand-in's process was reaped: the old one (done) or a new one that failed."""
        handover = self._find(stand_in)
        if handover is None or stand_in.pid is not None:
            return
        if handover.handed_over:
            self._end(handover, "")
        elif handover.outcome is None:
            self._end(handover, _cause(stand_in, "exited before it was ready"))
        else:
            self._under_way.pop(handover.child.name, None)

    def shutdown(self, stop: Callable[[ManagedChild], None]) -> None:
        """The supervisor stops: every stand-in's process stops too."""
        for handover in list(self._under_way.values()):
            if handover.outcome is None:
                handover.outcome = "the supervisor is shutting down"
            stop(handover.stand_in)

    def removed(self, child: ManagedChild, stop: Callable[[ManagedChild], None]) -> None:
        """`child` is being removed (a reload, a scale down): a graceful restart of it ends, its
        stand-in's process stopped as asked for, not killed with its cgroup as if it crashed."""
        handover = self._under_way.get(child.name)
        if handover is None or handover.child is not child:
            return
        if handover.outcome is None:
            handover.outcome = "the module is being removed"
        stop(handover.stand_in)

    def busy(self, name: str) -> bool:
        """Whether a graceful restart of module `name` is under way: its stand-in holds (or is
        about to hold) the module's other cgroup."""
        return name in self._under_way

    def holds(self, child: ManagedChild) -> bool:
        """Whether a stand-in of `child` still has a process (its cgroup is in use)."""
        handover = self._under_way.get(child.name)
        return handover is not None and handover.stand_in.pid is not None

    def left_over(self, child: ManagedChild) -> int | None:
        """The pid of a stand-in's process that outlives `child`'s own (a graceful restart that a
        `stop` or `restart` overtook: its new process is still stopping): until it is reaped,
        the module counts as stopping, and it must not start beside it."""
        handover = self._under_way.get(child.name)
        if handover is None or handover.child is not child or child.pid is not None:
            return None
        return handover.stand_in.pid

    def _find(self, stand_in: ManagedChild) -> Handover | None:
        handover = self._under_way.get(stand_in.name)
        return handover if handover is not None and handover.stand_in is stand_in else None

    def _end(self, handover: Handover, outcome: str, level: int = logging.ERROR) -> None:
        handover.outcome = outcome
        if outcome:
            child = handover.child
            kept = child.pid == handover.old_pid and child.state is ChildState.RUNNING
            log.log(
                level,
                "%s: graceful restart %s: %s%s",
                child.name,
                "failed" if level >= logging.ERROR else "abandoned",
                outcome,
                f"; the old process (pid {handover.old_pid}) keeps running" if kept else "",
            )
        if handover.stand_in.pid is None:
            self._under_way.pop(handover.child.name, None)


def _other_cgroup(child: ManagedChild) -> str:
    return child.name if child.cgroup != child.name else child.name + NEXT_CGROUP


def _cause(stand_in: ManagedChild, fallback: str) -> str:
    last = stand_in.last_exit
    return f"the new process did not become ready: {last.cause() if last else fallback}"


def _overtaken_by(child: ManagedChild) -> str:
    """What an operator (or a reload) asked of the module that ends its graceful restart: it is
    held stopped (`stop NAME`, a dependency's `on_failure: stop`) or restarted; "" if nothing."""
    if child.life.held:
        return child.life.held  # "stopped by operator"
    if child.life.intent is lc.Intent.RESTART:
        return "restarted (`restart` or a reload's change)"
    return ""


def _leaving(child: ManagedChild) -> bool:
    """Its process is being killed or stopped: a new one must not take over its life (the kill
    or the stop would then be the new process's, never watched nor escalated)."""
    return child.life.kill is not None or child.life.intent is not lc.Intent.NONE
