"""A new process the host refuses (EAGAIN: a pids cgroup, TasksMax or RLIMIT_NPROC used up; ENOMEM)
is the host's condition, like a broker that is down: the module waits with the reason and tries
again with a backoff, never counted against `max_restarts` nor the start breaker, and starts by
itself once the host has a process for it. Before, each refused fork was a crash (exit 127) with
almost no backoff, and a 15 s squeeze left modules `failed` for good. Without processes: the
transition, the launch, and the template's answers as the supervisor reads them."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from orchestrator import lifecycle as lc
from orchestrator import processes
from orchestrator.config import ModuleSpec, SupervisionSettings
from orchestrator.forkserver import ForkRefusedError, ForkServer, ForkServerError
from orchestrator.lifecycle import Life
from orchestrator.processes import Launch, ModuleProcess, launch_modules, module_env
from orchestrator.starts import FORK_RETRY_MAX, FORK_RETRY_MIN
from orchestrator.states import ChildState
from orchestrator.transition import transition

S = ChildState
NOW = 1000.0
SETTINGS = SupervisionSettings(
    restart="always", max_restarts=3, restart_window=60.0, backoff_initial=0.5, backoff_max=30.0
)
AGAIN = os.strerror(errno.EAGAIN)


def _refused(now: float = NOW) -> lc.SpawnFailed:
    return lc.SpawnFailed(now, AGAIN, host=True)


def test_a_refused_fork_waits_with_the_reason_uncounted() -> None:
    crashed = Life(S.BACKOFF, why="crashed", consecutive_failures=2, restart_times=(NOW - 5,))
    step = transition(crashed, _refused(), SETTINGS)
    life = step.life
    assert life.state is S.WAITING
    assert life.why == "cannot fork: Resource temporarily unavailable; retrying"
    assert life.consecutive_failures == 2 and life.restart_times == (NOW - 5,)  # not counted
    assert life.failed_spawn == 0
    assert [type(e).__name__ for e in step.effects] == ["Log"]  # no RecordStart, no AskBreaker
    assert life.deadline is not None and FORK_RETRY_MIN <= life.deadline - NOW <= FORK_RETRY_MAX
    again = transition(life, _refused(life.deadline), SETTINGS)
    assert [e.level for e in again.effects] == [lc.DEBUG]  # said once a wait
    assert again.life.deadline is not None
    assert again.life.deadline - life.deadline > life.deadline - NOW  # it backs off


def test_the_retries_are_bounded_so_a_lifted_limit_is_noticed_soon() -> None:
    life, now = Life(), NOW
    for _ in range(40):
        life = transition(life, _refused(now), SETTINGS).life
        assert life.deadline is not None
        assert FORK_RETRY_MIN <= life.deadline - now <= FORK_RETRY_MAX
        now = life.deadline
    quick = replace(SETTINGS, backoff_initial=0.0)  # never a busy loop
    assert transition(Life(), _refused(), quick).life.deadline == NOW + FORK_RETRY_MIN


def test_refused_forks_never_fail_the_module_and_it_starts_once_it_can() -> None:
    life, now = Life(), NOW
    for _ in range(20):  # far more than max_restarts
        step = transition(life, lc.StartRequested(now, lc.Gate()), SETTINGS)
        assert [type(e).__name__ for e in step.effects] == ["Spawn"]
        life = transition(step.life, _refused(now), SETTINGS).life
        assert life.state is S.WAITING
        assert life.deadline is not None
        now = life.deadline
        assert transition(life, lc.Due(now), SETTINGS).effects == (lc.TryStart(),)
    step = transition(life, lc.StartRequested(now, lc.Gate()), SETTINGS)
    life = transition(step.life, lc.Spawned(now, 42), SETTINGS).life
    assert life.state is S.STARTING and life.refused_forks == 0 and life.why == ""


def test_another_module_changing_does_not_cut_the_backoff_short() -> None:
    # Each refusal woke every waiting module, which then tried at once: no backoff at all.
    life = transition(Life(), _refused(), SETTINGS).life
    assert life.deadline is not None
    early = transition(life, lc.DependencyChanged(NOW + 0.01, lc.Gate()), SETTINGS)
    assert early == lc.Step(life)
    due = transition(life, lc.DependencyChanged(life.deadline, lc.Gate()), SETTINGS)
    assert [type(e).__name__ for e in due.effects] == ["Spawn"]


def test_any_other_spawn_failure_is_still_a_crash() -> None:
    step = transition(Life(), lc.SpawnFailed(NOW, "[Errno 2] no such file"), SETTINGS)
    assert step.life.state is S.BACKOFF
    assert lc.RecordStart(started=False) in step.effects
    stopping = transition(
        Life(), lc.SpawnFailed(NOW, AGAIN, shutting_down=True, host=True), SETTINGS
    )
    assert stopping.life.state is S.STOPPED  # a shutdown does not wait for the host


# -- the launch -----------------------------------------------------------------------------------


class _RefusingForks:
    """A fork server whose template the OS refused every fork."""

    def fork_many(self, requests: list[Any]) -> list[ForkServerError]:
        return [ForkRefusedError(errno.EAGAIN) for _ in requests]


def test_a_fork_the_host_refused_is_not_spawned_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[str] = []

    def spawn(name: str, *_: Any) -> ModuleProcess:
        spawned.append(name)
        raise AssertionError("spawned")

    monkeypatch.setattr(processes, "spawn_module", spawn)
    env = module_env("m", "ipc:///nowhere", {}, lifeline=0)
    launch = Launch(ModuleSpec(name="m", path=tmp_path / "m.py"), env, tmp_path)
    (result,) = launch_modules([launch], 0, _RefusingForks())  # type: ignore[arg-type]
    assert isinstance(result, OSError) and result.errno == errno.EAGAIN
    assert spawned == []


# -- the template's answers -----------------------------------------------------------------------


@pytest.fixture
def answering() -> Iterator[tuple[ForkServer, list[dict[str, Any]]]]:
    """A ForkServer talking to a stand-in template that answers each request with the next of
    the answers the test puts in the list."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    answers: list[dict[str, Any]] = []

    def serve() -> None:
        while True:
            try:
                payload, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 64)
            except OSError:
                return
            for fd in fds:
                os.close(fd)
            if not payload:
                return
            theirs.send(msgpack.packb(answers.pop(0)))

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    server = ForkServer(lifeline=-1)
    ours.settimeout(10)
    server._sock, server._booted, server._first = ours, True, False
    yield server, answers
    server.close()
    theirs.close()
    serving.join(10)


def test_the_templates_refusal_is_the_hosts_and_the_template_is_kept(
    answering: tuple[ForkServer, list[dict[str, Any]]],
) -> None:
    server, answers = answering
    answers.append({"error": f"fork failed: [Errno 11] {AGAIN}", "errno": errno.EAGAIN})
    with pytest.raises(ForkRefusedError) as refused:
        server.fork("m", {}, Path("/"))
    assert refused.value.errno == errno.EAGAIN
    assert str(refused.value) == f"cannot fork: {AGAIN}"
    assert server.booted  # not "restarting it": the template did nothing wrong
    answers.append({"error": "fork failed: [Errno 12] no memory", "errno": errno.ENOMEM})
    results = server.fork_many([("a", {}, Path("/")), ("b", {}, Path("/"))])
    assert [getattr(r, "errno", None) for r in results] == [errno.ENOMEM, errno.ENOMEM]
    assert server.booted


def test_a_batch_says_which_entry_the_host_refused(
    answering: tuple[ForkServer, list[dict[str, Any]]],
) -> None:
    server, answers = answering
    failed = f"fork failed: [Errno 11] {AGAIN}"
    answers.append({"pids": [4242, failed, "fork failed: odd"], "errnos": [None, 11, 95]})
    forked, refused, other = server.fork_many([(n, {}, Path("/")) for n in "abc"])
    assert isinstance(forked, tuple) and forked[0] == 4242
    forked[1].close()
    assert isinstance(refused, ForkRefusedError)
    assert type(other) is ForkServerError  # not the host's: spawned instead, as before
    answers.append({"pids": [4243, failed]})  # an older template's answer: no errnos
    forked, unknown = server.fork_many([(n, {}, Path("/")) for n in "ab"])
    assert isinstance(forked, tuple)
    forked[1].close()
    assert type(unknown) is ForkServerError


def test_a_template_that_cannot_be_started_for_want_of_a_task_is_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EAGAIN, AGAIN)

    monkeypatch.setattr(processes.subprocess, "Popen", refuse)  # the template's start too
    server = ForkServer(lifeline=-1)
    with pytest.raises(ForkRefusedError):
        server.fork("m", {}, Path("/"))
    results = server.fork_many([("a", {}, Path("/"))])
    assert isinstance(results[0], ForkRefusedError)
