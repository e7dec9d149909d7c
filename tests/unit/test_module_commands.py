"""`stop`, `start` and `restart` requests against a manager without processes: what each
answers, and that a request overtaken by another one answers at once instead of hanging."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from test_dependents_follow import manager_with_modules

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.commands import CommandHandler
from orchestrator.states import ChildState

S = ChildState


class _Port(SimpleNamespace):
    """The narrow part of `SupervisorPort` these requests use."""

    def __init__(self, manager: Any) -> None:
        super().__init__(manager=manager, replies=[], waiters=[])
        self.send_reply = lambda identity, answer: self.replies.append(answer)
        self.wait_for = lambda identity, waiter: self.waiters.append(waiter)

    def serve(self) -> list[dict[str, Any] | None]:
        return [waiter() for waiter in self.waiters]


def _handler(tmp_path: Path) -> tuple[CommandHandler, _Port]:
    manager, _ = manager_with_modules(tmp_path)
    port = _Port(manager)
    return CommandHandler(port), port  # type: ignore[arg-type]


def test_a_stop_overtaken_by_a_start_answers_instead_of_hanging(tmp_path: Path) -> None:
    handler, port = _handler(tmp_path)
    handler.handle(b"a", {"cmd": "stop", "name": "db"})
    assert port.manager.children["db"].state is S.STOPPING and port.serve() == [None]
    handler.handle(b"b", {"cmd": "start", "name": "db"})  # before the stop finished
    stop_answer, start_answer = port.serve()
    assert stop_answer is not None and not stop_answer["ok"]
    assert stop_answer["error"] == "db was started again before it stopped"
    assert start_answer is None  # it starts once its process has stopped


def test_a_running_module_is_already_started_and_unknown_names_are_usage(
    tmp_path: Path,
) -> None:
    handler, port = _handler(tmp_path)
    handler.handle(b"a", {"cmd": "start", "name": "audit"})
    assert port.replies[-1]["ok"] and port.replies[-1]["data"]["already"] is True
    for cmd in ("stop", "start", "restart"):
        for name in ("nosuch", None, 3, ["db"]):
            handler.handle(b"a", {"cmd": cmd, "name": name})
            assert port.replies[-1]["data"] == {"kind": "usage"}, (cmd, name)
    port.manager.shutting_down = True
    handler.handle(b"a", {"cmd": "stop", "name": "db"})
    assert port.replies[-1]["error"] == "the supervisor is shutting down"


def test_a_module_turned_into_instances_stands_for_them_while_it_stops(tmp_path: Path) -> None:
    """A reload made `pool` (one process) `pool` with `instances: 2`: while the old process
    stops, `pool` means the instances (a `scale` took them for removed and restarted them)."""
    from dataclasses import replace

    from orchestrator import lifecycle as lc
    from orchestrator.child import ManagedChild
    from orchestrator.instances import being_removed, live_members, members

    manager, _ = manager_with_modules(tmp_path)
    old = next(iter(manager.children.values()))
    name = old.name
    children: dict[str, ManagedChild] = {name: old}
    for k in (1, 2):
        spec = replace(old.spec, name=f"{name}#{k}", instance_of=name)
        children[spec.name] = ManagedChild(spec, old.log)
    assert [c.name for c in members(children, name)] == [name]  # before: the module itself
    old.life = replace(old.life, intent=lc.Intent.REMOVE)
    assert [c.name for c in members(children, name)] == [f"{name}#1", f"{name}#2"]
    assert [c.name for c in live_members(children, name)] == [f"{name}#1", f"{name}#2"]
    assert being_removed(children, old) and not being_removed(children, children[f"{name}#1"])
    assert being_removed({}, children[f"{name}#1"])  # gone from the manager altogether


def test_a_heartbeats_counters_are_counts_whatever_a_module_sends(tmp_path: Path) -> None:
    """bytes made `status --json` fail, NaN made it invalid JSON, escapes reached the table."""
    manager, _ = manager_with_modules(tmp_path)
    child = next(iter(manager.children.values()))
    hostile = {
        "dropped": b"\x00",
        "events_in": "\x1b[2J\x1b[31mPWNED\nforged",
        "bad_frames": float("nan"),
        "events_out": -5,
        "retries": 10**30,
        "junk": 1,
    }
    manager.heartbeat(child, {"counters": hostile, "busy_for": float("inf")})
    assert child.counters == {
        "events_in": 0,
        "events_out": 0,
        "callback_errors": 0,
        "bad_frames": 0,
        "dropped": 0,
        "retries": 2**53,
        "breaker_opens": 0,
    }
    assert child.busy_for == 0.0


def test_the_supervisors_own_log_is_read_where_it_started_not_where_a_reload_says(
    tmp_path: Path,
) -> None:
    """A reload's `logging.directory` applies at the next `up`: `logs HOST/app` read the new
    directory, where nothing of this supervisor's is."""
    handler, port = _handler(tmp_path)
    port.logs = tmp_path / "started"
    port.logs.mkdir()
    (port.logs / "app.log").write_text("supervisor up\n")
    reloaded = SimpleNamespace(logging=SimpleNamespace(directory=tmp_path / "reloaded"))
    port.config = lambda: reloaded
    handler.handle(b"a", {"cmd": "logs", "name": "app", "lines": 5})
    assert port.replies[-1]["data"] == {
        "name": "app",
        "file": str(port.logs / "app.log"),
        "lines": ["supervisor up"],
    }


def _fake_processes(manager: Any, monkeypatch: Any) -> list[int]:
    """Spawns get made-up pids (beyond any pid_max), signals are only noted: no process is
    touched. The pids signalled are returned, as the manager signals them."""
    signalled: list[int] = []
    for name in ("signal_module", "signal_process"):  # a group's signals, and the process's
        monkeypatch.setattr(
            f"orchestrator.manager.{name}", lambda process, sig: signalled.append(process.pid)
        )
    pids = itertools.count(90_000_001)

    def spawn(child: ManagedChild, effect: object) -> None:
        pid = next(pids)
        child.process = SimpleNamespace(pid=pid, channel_id=b"")  # type: ignore[assignment]
        manager.by_pid[pid] = child
        manager.handle(child, lc.Spawned(time.monotonic(), pid))

    monkeypatch.setattr(manager, "_spawn", spawn)
    monkeypatch.setattr(manager.cgroups, "oom_killed", lambda *args: False, raising=False)
    return signalled


def _reap(manager: Any, child: ManagedChild, monkeypatch: Any) -> None:
    assert child.pid is not None
    del manager.by_pid[child.pid]
    monkeypatch.setattr(manager.processes, "reap", lambda: iter([(child, 0)]))
    manager.reap()


def test_a_stop_during_a_graceful_restart_answers_once_its_new_process_is_gone(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`stop` answered `stopped` (and status showed no pid) while the new process of the graceful
    restart it overtook still ran, unseen; a `start` meanwhile ran a second one beside it."""
    handler, port = _handler(tmp_path)
    manager = port.manager
    signalled = _fake_processes(manager, monkeypatch)
    port.overview, port.logs = lambda: {"supervisor": {}}, tmp_path  # for `status`
    manager.cgroups.notes = manager.cgroups.enforced_by = {}
    audit = manager.children["audit"]  # nothing follows it
    audit.process = SimpleNamespace(pid=90_000_000, channel_id=b"")
    manager.by_pid[90_000_000] = audit
    handler.handle(b"g", {"cmd": "restart", "name": "audit", "graceful": True})
    (stand_in,) = manager.handovers.stand_ins()
    graceful = port.waiters[-1]
    handler.handle(b"s", {"cmd": "stop", "name": "audit"})
    stopped = port.waiters[-1]
    assert set(signalled) == {90_000_000, 90_000_001}  # both processes are asked to stop
    answer = graceful()
    assert answer is not None and not answer["ok"]
    assert answer["error"] == "audit: stopped by operator during the graceful restart"
    _reap(manager, audit, monkeypatch)
    assert audit.state is S.STOPPED and stopped() is None  # its new process is still there
    handler.handle(b"st", {"cmd": "status", "name": "audit"})
    row = port.replies[-1]["data"]["modules"][0]
    assert (row["state"], row["pid"]) == ("stopping", 90_000_001)
    handler.handle(b"t", {"cmd": "start", "name": "audit"})
    started = port.waiters[-1]
    assert audit.state is S.WAITING and audit.pid is None and started() is None
    assert audit.why == "waiting for its previous process (pid 90000001) to stop"
    _reap(manager, stand_in, monkeypatch)
    assert audit.state is S.STARTING and audit.pid == 90_000_002  # only now
    manager.handle(audit, lc.Ready(time.monotonic(), audit.pid, contained=True))
    answer = started()
    assert answer is not None and answer["data"] == {"name": "audit", "pid": 90_000_002}


def _exit(manager: Any, child: ManagedChild) -> None:
    manager.by_pid.pop(child.pid, None)
    manager.handle(child, lc.Exited(time.monotonic(), 0))
    manager.advance_drains()


def test_a_restart_waits_for_a_dependency_passing_through_a_restart(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`restart api` while `restart db` was under way failed at once, `api is waiting: waiting
    for db to run`, though api ran again as soon as db did; a db held stopped still fails it."""
    handler, port = _handler(tmp_path)
    manager = port.manager
    _fake_processes(manager, monkeypatch)
    db, api = manager.children["db"], manager.children["api"]
    handler.handle(b"d", {"cmd": "restart", "name": "db"})  # its dependents stop first
    for name in ("web", "api", "cache"):
        _exit(manager, manager.children[name])
    assert (db.state, api.state) == (S.STOPPING, S.WAITING)
    handler.handle(b"a", {"cmd": "restart", "name": "api"})
    restarted = port.waiters[-1]
    assert restarted() is None
    _exit(manager, db)
    manager.handle(db, lc.Ready(time.monotonic(), db.pid, contained=True))
    assert api.state is S.STARTING and restarted() is None
    manager.handle(api, lc.Ready(time.monotonic(), api.pid, contained=True))
    answer = restarted()
    assert answer is not None and answer["data"] == {"name": "api", "pid": api.pid}
    manager.hold(db, "stopped by operator")  # only an operator brings it back
    for child in (manager.children["web"], api, db):
        _exit(manager, child)
    handler.handle(b"a", {"cmd": "restart", "name": "api"})
    answer = port.waiters[-1]()
    assert answer is not None and answer["error"].startswith("api is waiting: waiting for db")


def test_a_restart_or_start_overtaken_by_a_stop_says_so(tmp_path: Path, caplog: Any) -> None:
    """They said `audit is held stopped`, as if it had been before they were asked; a `start`
    of a stopping module logged nothing."""
    handler, port = _handler(tmp_path)
    handler.handle(b"r", {"cmd": "restart", "name": "audit"})
    handler.handle(b"s", {"cmd": "stop", "name": "audit"})
    answer = port.waiters[0]()
    assert answer is not None and answer["error"] == "audit: a later `stop` overtook this restart"
    with caplog.at_level("INFO"):
        handler.handle(b"t", {"cmd": "start", "name": "audit"})  # while it stops
    assert "start of audit requested" in caplog.text
    handler.handle(b"s", {"cmd": "stop", "name": "audit"})
    answer = port.waiters[-2]()
    assert answer is not None and answer["error"] == "audit: a later `stop` overtook this start"


def test_stop_and_start_of_a_module_with_instances_act_on_every_instance(tmp_path: Path) -> None:
    """`stop w` answered `no enabled module named 'w' (modules: w#1, w#2)` (exit 2), while
    `restart w` and `status w` took the module's name for its instances."""
    from dataclasses import replace

    handler, port = _handler(tmp_path)
    manager = port.manager
    old = next(iter(manager.children.values()))
    for k in (1, 2):
        spec = replace(old.spec, name=f"w#{k}", instance_of="w", depends_on=())
        manager.children[spec.name] = ManagedChild(spec, old.log, state=S.RUNNING)
    pool = [manager.children["w#1"], manager.children["w#2"]]
    handler.handle(b"a", {"cmd": "stop", "name": "w"})
    assert not port.replies, port.replies  # no refusal: it waits for both to stop
    assert all(c.life.held for c in pool) and port.serve() == [None]
    for child in pool:
        child.life = replace(child.life, state=S.STOPPED)
    (answer,) = port.serve()
    assert answer is not None and answer["ok"], answer
    assert [i["name"] for i in answer["data"]["instances"]] == ["w#1", "w#2"]
    port.waiters.clear()
    released: list[str] = []
    manager.release = lambda child: released.append(child.name)  # no processes to start here
    handler.handle(b"b", {"cmd": "start", "name": "w"})
    assert not port.replies and released == ["w#1", "w#2"]
    handler.handle(b"c", {"cmd": "stop", "name": "w#2"})  # one instance, as before
    assert not port.replies and len(port.waiters) == 2
