"""The manager hands a module's departure to its dependents, edge by edge and down the chain;
not during a shutdown, and not for a graceful restart's stand-in. No processes: the lifecycle
decides, and a signal to a module without a process is a no-op."""

from __future__ import annotations

import signal
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig, LoggingSection, ModuleSpec, Redactor
from orchestrator.dependents import must_drain, stoppable, waiting_for
from orchestrator.forkserver import ForkServer
from orchestrator.lifecycle import Intent
from orchestrator.manager import ChildManager
from orchestrator.output import ModuleLog
from orchestrator.resources import Limits
from orchestrator.states import ChildState

S = ChildState
EDGES: dict[str, dict[str, str]] = {
    "db": {},
    "api": {"db": "restart"},
    "web": {"api": "restart"},  # follows db through api
    "cache": {"db": "stop"},
    "audit": {"db": "ignore"},
}


class FakeCgroups:
    def available(self) -> bool:
        return False


def manager_with_modules(tmp_path: Path) -> tuple[ChildManager, list[tuple[str, dict[str, Any]]]]:
    """A manager of the modules of `EDGES`, all running (without processes), and what it
    publishes."""
    published: list[tuple[str, dict[str, Any]]] = []
    config = AppConfig(
        config_dir=tmp_path, main_file=tmp_path / "main.yaml", modules_file=tmp_path / "m.yaml"
    )
    manager = ChildManager(
        config,
        Limits(max_processes=9, max_threads=4, available_mb=1, total_mb=1, cpu_count=1),
        redactor=Redactor(()),
        cgroups=FakeCgroups(),  # type: ignore[arg-type]
        channel_endpoint="ipc://unused",
        lifeline=-1,
        forkserver=ForkServer(-1),
        poller=zmq.Poller(),
        publish=lambda event_type, **data: published.append((event_type, data)),
        foreground=False,
    )
    for name, edges in EDGES.items():
        spec = ModuleSpec(
            name=name,
            path=tmp_path / "m.py",
            depends_on=tuple(edges),
            dependency_policy={dep: policy for dep, policy in edges.items() if policy != "restart"},
        )
        log = ModuleLog(name, LoggingSection(directory=tmp_path), Redactor(()), echo=False)
        manager.children[name] = ManagedChild(spec, log, state=S.RUNNING)
    return manager, published


def _states(manager: ChildManager) -> dict[str, tuple[ChildState, Intent]]:
    return {name: (c.state, c.life.intent) for name, c in manager.children.items()}


def test_an_operator_stop_is_followed_edge_by_edge_and_down_the_chain(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    manager.hold(manager.children["db"], "stopped by operator")
    assert _states(manager) == {
        "db": (S.STOPPING, Intent.STOP),
        "api": (S.STOPPING, Intent.WAIT),
        "web": (S.STOPPING, Intent.WAIT),
        "cache": (S.STOPPING, Intent.STOP),
        "audit": (S.RUNNING, Intent.NONE),
    }
    assert manager.children["cache"].life.held.startswith("stopped because db stopped running")
    assert manager.children["db"].life.held == "stopped by operator"


def test_nothing_follows_in_a_shutdown(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    manager.shutting_down = True
    manager.stop(manager.children["db"])
    assert [n for n, (state, _) in _states(manager).items() if state is not S.RUNNING] == ["db"]


def test_a_stand_in_leaving_running_is_not_followed(tmp_path: Path) -> None:
    manager, published = manager_with_modules(tmp_path)
    db = manager.children["db"]
    stand_in = ManagedChild(db.spec, db.log, state=S.RUNNING)
    stand_in.stand_in = True
    manager.handle(stand_in, lc.StopRequested(0.0))
    manager.handle(stand_in, lc.Exited(0.0, 0))
    assert all(state is S.RUNNING for state, _ in _states(manager).values())
    assert "module.unloaded" not in [event for event, _ in published]  # the module is still up


def test_waiting_for_and_the_shutdown_order(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    children = manager.children
    assert waiting_for(children["web"], children) is None
    children["db"].state = S.BACKOFF
    assert waiting_for(children["api"], children) == "waiting for db to run (depends_on)"
    assert stoppable(children) == []  # no module here has a process
    for pid, child in enumerate(children.values(), start=100):
        child.process = SimpleNamespace(channel_id=b"", pid=pid)  # type: ignore[assignment]
    assert [c.name for c in stoppable(children)] == ["audit", "cache", "web"]  # dependents first
    children["web"].process = None
    assert [c.name for c in stoppable(children)] == ["audit", "cache", "api"]


def test_a_restart_stops_its_dependents_first_leaves_first(
    tmp_path: Path, monkeypatch: Any
) -> None:
    manager, _ = manager_with_modules(tmp_path)
    signalled: list[int] = []
    for name in ("signal_module", "signal_process"):  # a group's signals, and the process's
        monkeypatch.setattr(
            f"orchestrator.manager.{name}",
            lambda process, sig: signalled.append(process.pid) if sig == signal.SIGTERM else None,
        )
    children = manager.children
    pids = {name: pid for pid, name in enumerate(children, start=100)}
    for name, child in children.items():
        child.process = SimpleNamespace(channel_id=b"", pid=pids[name])  # type: ignore[assignment]
    by_pid = {pid: name for name, pid in pids.items()}

    def exit_of(name: str) -> None:
        manager.handle(children[name], lc.Exited(0.0, 0))  # its process is gone
        manager.advance_drains()

    manager.restart(children["db"], release=True)
    assert [by_pid[pid] for pid in signalled] == ["web", "cache"]  # the leaves of db's followers
    assert children["db"].state is S.RUNNING and children["db"].life.draining
    assert children["api"].state is S.RUNNING and children["api"].life.draining
    assert children["audit"].life == lc.Life(S.RUNNING)  # ignore: not in the drain
    exit_of("web")
    assert children["web"].state is S.WAITING, children["web"].life
    assert children["web"].life.why == "waiting for api to run (depends_on)"
    assert [by_pid[pid] for pid in signalled] == ["web", "cache", "api"]
    exit_of("cache")
    assert children["cache"].state is S.STOPPED and children["db"].life.draining
    exit_of("api")
    assert children["api"].life.why == "waiting for db to run (depends_on)"
    assert [by_pid[pid] for pid in signalled] == ["web", "cache", "api", "db"]
    assert (children["db"].state, children["db"].life.intent) == (S.STOPPING, Intent.RESTART)


def test_a_crashed_dependency_is_followed_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    manager, _ = manager_with_modules(tmp_path)
    monkeypatch.setattr("orchestrator.manager.signal_module", lambda process, sig: None)
    monkeypatch.setattr("orchestrator.manager.signal_process", lambda process, sig: None)
    for pid, child in enumerate(manager.children.values(), start=100):
        child.process = SimpleNamespace(channel_id=b"", pid=pid)  # type: ignore[assignment]
    manager.handle(manager.children["db"], lc.Exited(0.0, 1 << 8))
    states = _states(manager)
    assert states["cache"] == (S.STOPPING, Intent.STOP)  # no dependent of its own: at once
    assert states["api"] == (S.RUNNING, Intent.WAIT)  # web, its own dependent, stops first
    assert states["web"] == (S.STOPPING, Intent.WAIT)


def test_waiting_for_names_the_chain_when_the_dependency_waits_too(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    children = manager.children
    children["db"].state = S.STOPPED
    children["api"].life = lc.Life(S.WAITING, why="waiting for db to run (depends_on)")
    assert waiting_for(children["api"], children) == "waiting for db to run (depends_on)"
    assert waiting_for(children["web"], children) == (
        "waiting for api to run (depends_on; api: waiting for db)"
    )
    children["api"].life = lc.Life(S.WAITING, why="process limit reached (9 module processes)")
    assert waiting_for(children["web"], children) == (
        "waiting for api to run (depends_on; api: process limit reached (9 module processes))"
    )
    children["api"].life = lc.Life(S.BACKOFF, why="crash")  # not waiting: no chain
    assert waiting_for(children["web"], children) == "waiting for api to run (depends_on)"


def test_a_change_does_not_start_a_scheduled_module_that_is_not_running(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    audit = manager.children["audit"]
    audit.spec = replace(audit.spec, schedule="0 0 1 1 *")
    for state in (S.STOPPED, S.DONE, S.FAILED, S.STARTING):  # STARTING: a job under way
        audit.life = lc.Life(state, spawns=1)
        manager.restart_changed(audit)  # what a reload and a hot reload call
        assert audit.life == lc.Life(state, spawns=1), state
    audit.life = lc.Life(S.RUNNING, spawns=1)  # a run() module: restarted as any other
    manager.restart_changed(audit)
    assert (audit.state, audit.life.intent) == (S.STOPPING, Intent.RESTART)


def test_a_drain_waits_for_a_dependent_already_stopping(tmp_path: Path, monkeypatch: Any) -> None:
    manager, _ = manager_with_modules(tmp_path)
    monkeypatch.setattr("orchestrator.manager.signal_module", lambda process, sig: None)
    monkeypatch.setattr("orchestrator.manager.signal_process", lambda process, sig: None)
    children = manager.children
    for pid, child in enumerate(children.values(), start=100):
        child.process = SimpleNamespace(channel_id=b"", pid=pid)  # type: ignore[assignment]
    manager.hold(children["web"], "stopped by operator")  # a leaf: it stops at once
    assert children["web"].state is S.STOPPING
    manager.restart(children["api"], release=True)
    assert children["api"].life.draining  # web's process is still there
    manager.advance_drains()  # nothing changed: it keeps waiting
    assert children["api"].state is S.RUNNING
    manager.handle(children["web"], lc.Exited(0.0, 0))
    manager.advance_drains()
    assert (children["api"].state, children["api"].life.intent) == (S.STOPPING, Intent.RESTART)
    assert (children["web"].state, children["web"].life.held) == (S.STOPPED, "stopped by operator")
    assert children["db"].state is S.RUNNING  # what api depends on is untouched


def test_an_instance_drains_what_depends_on_its_module(tmp_path: Path) -> None:
    manager, _ = manager_with_modules(tmp_path)
    children, log = manager.children, manager.children["db"].log
    worker = ModuleSpec(name="worker#2", path=tmp_path / "m.py", instance_of="worker")
    consumer = ModuleSpec(
        name="consumer",
        path=tmp_path / "m.py",
        depends_on=("worker",),
        dependency_policy={},
    )
    children["worker#2"] = ManagedChild(worker, log, state=S.RUNNING)
    children["consumer"] = ManagedChild(consumer, log, state=S.RUNNING)
    assert not must_drain(children["worker#2"], children.values())  # no process to wait for
    children["consumer"].process = SimpleNamespace(channel_id=b"", pid=7)  # type: ignore[assignment]
    assert must_drain(children["worker#2"], children.values())
    children["consumer"].spec = replace(consumer, dependency_policy={"worker": "ignore"})
    assert not must_drain(children["worker#2"], children.values())  # it does not follow
    children["worker#2"].life = lc.Life(S.RUNNING, draining=True)
    assert waiting_for(children["consumer"], children) == "waiting for worker to run (depends_on)"


def test_a_pool_that_shrinks_or_rolls_is_still_there_for_its_dependents(tmp_path: Path) -> None:
    """One instance leaving while another runs (a rolling restart, a crash, a scale down) is not
    followed; a job that finished (`done`) meets a dependency as a running module does."""
    manager, _ = manager_with_modules(tmp_path)
    children, log = manager.children, manager.children["db"].log
    for k in (1, 2):
        spec = ModuleSpec(name=f"worker#{k}", path=tmp_path / "m.py", instance_of="worker")
        children[spec.name] = ManagedChild(spec, log, state=S.RUNNING)
    consumer = ModuleSpec(name="consumer", path=tmp_path / "m.py", depends_on=("worker",))
    children["consumer"] = ManagedChild(consumer, log, state=S.RUNNING)
    children["consumer"].process = SimpleNamespace(channel_id=b"", pid=7)  # type: ignore[assignment]
    assert not must_drain(children["worker#2"], children.values())  # worker#1 still runs
    manager.handle(children["worker#2"], lc.StopRequested(0.0))
    assert (
        children["consumer"].state is S.RUNNING and children["consumer"].life.intent is Intent.NONE
    )
    children["worker#1"].state = S.BACKOFF  # the last one goes too: now it is followed
    assert must_drain(children["worker#2"], children.values())
    job = ModuleSpec(name="job", path=tmp_path / "m.py")
    children["job"] = ManagedChild(job, log, state=S.DONE)
    report = ModuleSpec(name="report", path=tmp_path / "m.py", depends_on=("job",))
    children["report"] = ManagedChild(report, log, state=S.WAITING)
    assert waiting_for(children["report"], children) is None  # done: met, as a oneshot is


def test_a_reload_that_removes_a_dependency_does_not_hold_who_no_longer_needs_it(
    tmp_path: Path,
) -> None:
    """`cache` depended on `db` with `on_failure: stop`; a reload removes db and cache's
    dependency on it: cache is restarted as changed, not held stopped by db's removal."""
    from orchestrator.reconcile import ReloadPlan

    manager, _ = manager_with_modules(tmp_path)
    children = manager.children
    for name in ("api", "web", "audit"):
        children[name].spec = replace(children[name].spec, depends_on=(), dependency_policy={})
    new_cache = replace(children["cache"].spec, depends_on=(), dependency_policy={})
    config = replace(
        manager.config,
        modules=tuple(
            new_cache if name == "cache" else children[name].spec
            for name in ("api", "web", "cache", "audit")
        ),
    )
    plan = ReloadPlan(stop=("db",), restart={"cache": ("depends_on",)})
    manager.apply_reload(config, plan, manager.limits)
    assert not children["cache"].life.held, children["cache"].life
    assert children["cache"].life.intent is not Intent.STOP
