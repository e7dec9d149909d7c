"""The graceful restart's hand-over, without processes: a fake `handle` runs the transition
function and plays the process side (a spawn gets the next pid, a signal is noted)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator import lifecycle as lc
from orchestrator.child import LastExit, ManagedChild
from orchestrator.config import LoggingSection, ModuleSpec, Redactor
from orchestrator.handover import NEXT_CGROUP, Handovers
from orchestrator.lifecycle import Life
from orchestrator.output import ModuleLog
from orchestrator.states import ChildState, ExitReason
from orchestrator.transition import transition

S = ChildState


class World:
    """The manager's side: processes by pid, what was published and signalled."""

    def __init__(self, tmp_path: Path) -> None:
        self.pids = itertools.count(200)
        self.by_pid: dict[int, ManagedChild] = {}
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.signalled: list[int] = []
        self.handovers = Handovers(self.handle, self.by_pid, self.publish)
        spec = ModuleSpec(name="svc", path=tmp_path / "svc.py")
        log = ModuleLog("svc", LoggingSection(directory=tmp_path), Redactor(()), echo=False)
        self.child = ManagedChild(spec, log)
        self.child.life = Life(S.RUNNING, started_at=1.0, ready_at=1.5, spawns=1)
        self._adopt(self.child, 100)

    def _adopt(self, child: ManagedChild, pid: int) -> None:
        child.process = SimpleNamespace(pid=pid)  # type: ignore[assignment]
        self.by_pid[pid] = child

    def publish(self, event_type: str, **data: Any) -> None:
        self.published.append((event_type, data))

    def handle(self, child: ManagedChild, event: lc.Event) -> None:
        step = transition(child.life, event, child.spec.supervision)
        child.life = step.life
        for effect in step.effects:
            if isinstance(effect, lc.Spawn):
                pid = next(self.pids)
                self._adopt(child, pid)
                self.handle(child, lc.Spawned(2.0, pid))
            elif isinstance(effect, lc.Signal) and child.pid is not None:
                self.signalled.append(child.pid)
            elif isinstance(effect, lc.RecordExit):
                child.last_exit = LastExit(effect.status, effect.reason, 0.0, effect.error)
                child.process = None

    def ready(self, stand_in: ManagedChild) -> None:
        self.handle(stand_in, lc.Ready(3.0, stand_in.pid, contained=True))
        self.handovers.ready(stand_in)

    def exit(self, child: ManagedChild, raw: int = 0) -> None:
        assert child.pid is not None
        del self.by_pid[child.pid]
        self.handle(child, lc.Exited(4.0, raw))
        if child.stand_in:
            self.handovers.exited(child)


def test_the_new_process_takes_over_and_the_old_one_stops(tmp_path: Path) -> None:
    world = World(tmp_path)
    handover = world.handovers.begin(world.child)
    assert not isinstance(handover, str)
    (stand_in,) = world.handovers.stand_ins()
    assert stand_in.pid == 200 and stand_in.cgroup == "svc" + NEXT_CGROUP
    assert stand_in.spec.supervision.restart == "never" and stand_in.log is world.child.log
    assert world.handovers.begin(world.child) == "a graceful restart of svc is already under way"
    world.ready(stand_in)
    child = world.child
    assert (child.state, child.pid, child.spawns, child.restarts) == (S.RUNNING, 200, 2, 1)
    assert (child.cgroup, stand_in.cgroup) == ("svc" + NEXT_CGROUP, "svc")  # swapped with them
    assert world.by_pid == {200: child, 100: stand_in}
    assert stand_in.state is S.STOPPING and world.signalled == [100]
    restarted = ("module.restarted", {"name": "svc", "pid": 200, "restarts": 1, "graceful": True})
    assert restarted in world.published and handover.outcome is None  # until the old one is gone
    world.exit(stand_in)
    assert handover.outcome == "" and world.handovers.stand_ins() == []
    assert child.state is S.RUNNING and child.pid == 200


def test_a_new_process_that_fails_leaves_the_old_one_alone(tmp_path: Path) -> None:
    world = World(tmp_path)
    handover = world.handovers.begin(world.child)
    assert not isinstance(handover, str)
    (stand_in,) = world.handovers.stand_ins()
    world.exit(stand_in, 71 << 8)  # initialize() raised
    assert handover.outcome is not None
    assert handover.outcome.startswith("the new process did not become ready: initialize failed")
    assert (world.child.state, world.child.pid, world.child.restarts) == (S.RUNNING, 100, 0)
    assert world.signalled == [] and world.handovers.stand_ins() == []
    assert world.by_pid == {100: world.child}


def test_the_old_process_gone_meanwhile_abandons_the_handover(tmp_path: Path) -> None:
    world = World(tmp_path)
    handover = world.handovers.begin(world.child)
    assert not isinstance(handover, str)
    (stand_in,) = world.handovers.stand_ins()
    world.exit(world.child, 9)  # SIGKILLed: its restart policy takes it
    assert world.child.state is S.BACKOFF
    world.ready(stand_in)
    assert handover.outcome == "the old process stopped running during the graceful restart"
    assert stand_in.state is S.STOPPING and world.signalled == [200]  # the new one is stopped
    assert world.child.pid is None
    world.exit(stand_in)
    assert world.handovers.stand_ins() == []


def test_only_a_running_module_can_restart_gracefully(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.child.life = Life(S.BACKOFF)
    assert world.handovers.begin(world.child) == (
        "svc is backoff, not running: use `restart` instead"
    )


def test_an_old_process_being_killed_is_not_taken_over(tmp_path: Path) -> None:
    """Hung (or over its limit, or unhealthy) while the new one started: the kill belongs to the
    old process, so the new one is stopped rather than handed a life that awaits a SIGKILL."""
    world = World(tmp_path)
    handover = world.handovers.begin(world.child)
    assert not isinstance(handover, str)
    (stand_in,) = world.handovers.stand_ins()
    world.handle(world.child, lc.HealthFailed(ExitReason.HUNG))
    assert world.child.life.kill is ExitReason.HUNG and world.child.state is S.RUNNING
    world.ready(stand_in)
    assert handover.outcome == "the old process stopped running during the graceful restart"
    assert world.child.pid == 100 and stand_in.state is S.STOPPING  # no swap: the new one stops
    assert world.handovers.begin(world.child) == "a graceful restart of svc is already under way"
    world.exit(stand_in)
    assert world.handovers.begin(world.child) == "svc is being stopped: use `restart` instead"


def test_a_module_removed_meanwhile_stops_its_new_process_as_asked(tmp_path: Path) -> None:
    """A scale down or a reload removing the module: the stand-in is stopped (SIGTERM), not
    killed with its cgroup when the module is forgotten, which logged a crash."""
    world = World(tmp_path)
    handover = world.handovers.begin(world.child)
    assert not isinstance(handover, str)
    (stand_in,) = world.handovers.stand_ins()
    world.handovers.removed(world.child, lambda child: world.handle(child, lc.StopRequested(5.0)))
    assert handover.outcome == "the module is being removed"
    assert stand_in.state is S.STOPPING and world.signalled == [200]
    assert world.handovers.holds(world.child)  # its cgroup stays until its process is gone
    world.exit(stand_in)
    assert not world.handovers.holds(world.child) and world.handovers.stand_ins() == []
