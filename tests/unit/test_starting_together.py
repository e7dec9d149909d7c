"""Modules started together are forked with one request to the fork server, and still each
counts against the process limit as it is decided."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import pytest
import zmq

from orchestrator import lifecycle as lc
from orchestrator import processes
from orchestrator.config import AppConfig, ModuleSpec, Redactor
from orchestrator.config.model import SupervisionSettings
from orchestrator.forkserver import ForkRefusedError, ForkServerError, Request
from orchestrator.manager import ChildManager
from orchestrator.resources import Limits
from orchestrator.states import ChildState


class FakeCgroups:
    def available(self) -> bool:
        return False

    def prepare(self, module: str, limits: object = None) -> str | None:
        return None

    def env(self, module: str) -> dict[str, str]:
        return {}


class FakeForkServer:
    """Records each call; answers a pid and a pipe per request, or an error for `refuse`."""

    def __init__(self, refuse: Sequence[str] = ()) -> None:
        self.calls: list[list[str]] = []
        self.refuse = set(refuse)
        self.pipes: list[int] = []
        self.host_refuses = 0  # the next forks the OS refuses (EAGAIN)

    def fork_many(
        self, requests: Sequence[Request]
    ) -> list[tuple[int, BinaryIO] | ForkServerError]:
        self.calls.append([name for name, _, _ in requests])
        results: list[tuple[int, BinaryIO] | ForkServerError] = []
        for index, (name, env, _) in enumerate(requests):
            assert isinstance(env, Mapping)
            if name in self.refuse:
                results.append(ForkServerError("no"))
                continue
            if self.host_refuses:
                self.host_refuses -= 1
                results.append(ForkRefusedError(errno.EAGAIN))
                continue
            read_end, write_end = os.pipe()
            self.pipes.append(write_end)
            results.append((900_000 + index, os.fdopen(read_end, "rb", buffering=0)))
        return results


def _manager(
    tmp_path: Path,
    names: list[str],
    forkserver: FakeForkServer,
    *,
    max_processes: int = 2,
    waiting: dict[str, str] | None = None,
) -> ChildManager:
    """A manager of modules `names`; with `waiting` (name: start method), also `d`, running, and
    those modules, waiting for it."""
    modules = [ModuleSpec(name=name, path=tmp_path / f"{name}.py") for name in names]
    if waiting:
        modules.append(ModuleSpec(name="d", path=tmp_path / "d.py"))
    for name, method in (waiting or {}).items():
        supervision = SupervisionSettings(start_method=method)  # type: ignore[arg-type]
        path = tmp_path / f"{name}.py"
        modules.append(ModuleSpec(name=name, path=path, depends_on=("d",), supervision=supervision))
    config = AppConfig(
        config_dir=tmp_path / "config",
        main_file=tmp_path / "main.yaml",
        modules_file=tmp_path / "m.yaml",
        modules=tuple(modules),
    )
    manager = ChildManager(
        config,
        Limits(max_processes=max_processes, max_threads=4, available_mb=1, total_mb=1, cpu_count=1),
        redactor=Redactor(()),
        cgroups=FakeCgroups(),  # type: ignore[arg-type]
        channel_endpoint="ipc://unused",
        lifeline=-1,
        forkserver=forkserver,  # type: ignore[arg-type]
        poller=zmq.Poller(),
        publish=lambda *args, **kwargs: None,
        foreground=False,
    )
    for child in manager.children.values():
        if child.spec.depends_on:
            child.state = ChildState.WAITING
    if waiting:
        manager.children["d"].state = ChildState.RUNNING
    return manager


def test_one_request_for_all_and_the_process_limit_counts_those_not_forked_yet(
    tmp_path: Path,
) -> None:
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, ["a", "b", "c"], forkserver)
    with manager.starting_together():
        for child in manager.children.values():
            manager.start(child)
        assert forkserver.calls == []  # not before the end
        assert all(child.pid is None for child in manager.children.values())
    assert forkserver.calls == [["a", "b"]]
    a, b, c = manager.children.values()
    assert a.state is ChildState.STARTING and a.pid == 900_000
    assert b.state is ChildState.STARTING and b.pid == 900_001
    assert c.state is ChildState.WAITING and "process limit" in c.life.why


def test_outside_it_each_start_forks_at_once(tmp_path: Path) -> None:
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, ["a", "b"], forkserver)
    for child in manager.children.values():
        manager.start(child)
    assert forkserver.calls == [["a"], ["b"]]


def test_a_module_the_template_could_not_fork_is_spawned_the_others_keep_their_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forkserver = FakeForkServer(refuse=["a"])
    manager = _manager(tmp_path, ["a", "b"], forkserver)
    spawned: list[str] = []

    def spawn(name: str, *args: object) -> object:
        spawned.append(name)
        raise OSError(12, "no memory for a new interpreter")

    monkeypatch.setattr(processes, "spawn_module", spawn)
    with manager.starting_together():
        for child in manager.children.values():
            manager.start(child)
    a, b = manager.children.values()
    assert spawned == ["a"]
    assert a.pid is None and a.state is not ChildState.STARTING  # its spawn failed: held back
    assert b.state is ChildState.STARTING and b.pid == 900_001


def _refuse_limits(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`name`'s limits cannot be applied (as a `user:` module's without POSIX ACLs)."""
    real = processes.with_limits

    def with_limits(spec: ModuleSpec, env: Mapping[str, str]) -> Mapping[str, str]:
        if spec.name == name:
            raise OSError(95, "cannot let user nobody reach the sockets (POSIX ACLs)")
        return real(spec, env)

    monkeypatch.setattr(processes, "with_limits", with_limits)


def test_a_failure_handled_while_the_others_wait_does_not_start_one_of_them_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `s` (spawned) fails at once; handling that wakes the waiting modules again, `a` among them,
    # whose fork is only decided.
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, [], forkserver, waiting={"a": "fork", "s": "spawn"})

    def spawn(name: str, *args: object) -> object:
        raise OSError(11, "no process for it")

    monkeypatch.setattr(processes, "spawn_module", spawn)
    manager.start_waiting()
    a = manager.children["a"]
    assert forkserver.calls == [["a"]]
    assert [c.name for c in manager.by_pid.values()] == ["a"] and a.spawns == 1


def test_a_failure_in_a_batch_is_handled_once_the_batch_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, [], forkserver, waiting={"u": "fork", "a": "fork"})
    _refuse_limits(monkeypatch, "u")
    manager.start_waiting()
    assert forkserver.calls == [["a"]]
    assert [c.name for c in manager.by_pid.values()] == ["a"]


def test_the_process_limit_holds_when_a_failure_in_a_batch_wakes_the_waiting_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, ["u", "m1", "m2", "m3", "m4"], forkserver, max_processes=3)
    _refuse_limits(monkeypatch, "u")
    with manager.starting_together():
        for child in manager.children.values():
            manager.start(child)
    live = [c.name for c in manager.children.values() if c.pid is not None]
    assert live == ["m1", "m2", "m3"]  # u's failure freed a place: m3 took it, not m4 too
    assert manager.children["m4"].state is ChildState.WAITING


def test_a_spawn_refused_for_its_environment_fails_that_module_not_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forkserver = FakeForkServer()
    manager = _manager(tmp_path, [], forkserver, waiting={"s": "spawn", "a": "fork"})

    def spawn(name: str, *args: object) -> object:
        raise ValueError("illegal environment variable name")  # as subprocess.Popen says it

    monkeypatch.setattr(processes, "spawn_module", spawn)
    manager.start_waiting()
    s, a = manager.children["s"], manager.children["a"]
    assert s.pid is None and s.state is ChildState.BACKOFF
    assert s.last_exit is not None and "illegal environment" in s.last_exit.error
    assert a.pid == 900_000


def test_a_module_run_as_another_user_is_never_forked_in_a_batch(tmp_path: Path) -> None:
    """A batch's intermediate holds every module's request, environments and secrets among
    them; a module that drops to `nobody` was a copy of it, and read them in its own memory."""
    from dataclasses import replace

    from module_sdk import protocol
    from orchestrator.config.limits import ModuleLimits

    class BothWays(FakeForkServer):
        def fork(self, name: str, env: Mapping[str, str], cwd: Path) -> tuple[int, BinaryIO]:
            self.calls.append([f"alone:{name}"])
            read_end, write_end = os.pipe()
            self.pipes.append(write_end)
            return 800_000, os.fdopen(read_end, "rb", buffering=0)

    forkserver = BothWays()
    specs = [ModuleSpec(name=name, path=tmp_path / f"{name}.py") for name in ("a", "spy", "b")]
    specs[1] = replace(specs[1], limits=ModuleLimits(user="nobody"))
    env = {protocol.ENV_CHANNEL_ID: "x", "SECRET": "s3cret"}
    launches = [processes.Launch(spec, env, tmp_path) for spec in specs]
    started = processes.launch_modules(launches, -1, forkserver)  # type: ignore[arg-type]
    assert forkserver.calls == [["a", "b"], ["alone:spy"]]
    assert [p.pid for p in started if not isinstance(p, OSError)] == [900_000, 800_000, 900_001]
    for write_end in forkserver.pipes:
        os.close(write_end)


def test_a_module_the_host_refuses_a_process_waits_uncounted_and_starts_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before, each refused fork was a crash (exit 127), restarted with almost no backoff: a
    # short squeeze of a pids limit left modules `failed` for good.
    def spawn(name: str, *args: object) -> object:
        raise AssertionError("spawned: a spawn needs a process too")

    monkeypatch.setattr(processes, "spawn_module", spawn)
    forkserver = FakeForkServer()
    forkserver.host_refuses = 10  # more than max_restarts (5)
    manager = _manager(tmp_path, ["a", "b"], forkserver)
    a, b = manager.children.values()
    manager.start(a)
    assert a.state is ChildState.WAITING and a.pid is None
    assert a.reason(0.0) == "cannot fork: Resource temporarily unavailable; retrying"
    assert a.last_exit is None and a.breaker is None  # not a crash, nor a failed start
    while forkserver.host_refuses:
        assert a.deadline is not None
        manager.handle(a, lc.Due(a.deadline))
        assert a.state is ChildState.WAITING
    manager.start(b)
    manager.start_waiting()  # what another module's change does: not before a's backoff is due
    assert a.state is ChildState.WAITING and a.pid is None
    assert a.deadline is not None
    manager.handle(a, lc.Due(a.deadline))
    assert a.state is ChildState.STARTING and a.pid is not None and a.life.restarts == 0
