"""The broker's supervision without a real broker: what a failed restart does to the loop."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from pathlib import Path
from typing import Any

import pytest
import zmq

from broker.__main__ import KeptReport
from orchestrator import broker_process
from orchestrator.boot import Boot
from orchestrator.broker_process import BrokerProcess
from orchestrator.config import load_config
from orchestrator.helper_spawn import helper_argv, spawn_helper
from orchestrator.rundir import RunDir


def _broker() -> BrokerProcess:
    return BrokerProcess(
        xsub="ipc:///nonexistent/xsub.sock",
        xpub="ipc:///nonexistent/xpub.sock",
        inject="ipc:///nonexistent/inject.sock",
        max_message_size=1024,
        high_water_mark=10,
        memory_limit_mb=64,
        lifeline=0,
        poller=zmq.Poller(),
        watch_exit=lambda pid, handler: None,
    )


def test_a_restart_that_cannot_start_a_process_is_retried_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_process(*args: Any, **kwargs: Any) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    broker = _broker()
    broker._restart_at = 10.0  # as after an exit
    broker.tick(10.0)  # must not raise into the supervisor's loop
    assert broker.restarts == 0 and broker.pid is None and broker.fd is None
    first = broker.next_deadline()
    assert first is not None and first > 10.0
    broker.tick(first)
    second = broker.next_deadline()
    assert second is not None and second - first > first - 10.0  # backing off


def test_a_helper_stopped_and_reaped_by_itself_is_forgotten_by_the_reaper(tmp_path: Path) -> None:
    """Its pid must not stay registered: the next process given that pid (a module's) would
    have its exit handed to the dead helper."""
    watched: dict[int, Any] = {}

    def watch_exit(pid: int, handler: Any) -> None:
        if handler is None:
            watched.pop(pid, None)
        else:
            watched[pid] = handler

    read_end, write_end = os.pipe()  # a lifeline that stays open
    broker = BrokerProcess(
        xsub=f"ipc://{tmp_path / 'xsub.sock'}",
        xpub=f"ipc://{tmp_path / 'xpub.sock'}",
        inject=f"ipc://{tmp_path / 'inject.sock'}",
        max_message_size=1024,
        high_water_mark=10,
        memory_limit_mb=256,
        lifeline=read_end,
        poller=zmq.Poller(),
        watch_exit=watch_exit,
    )
    try:
        broker.start()
        broker.wait_ready(10.0)
        assert list(watched) == [broker.pid]
        broker.stop()
        assert watched == {}
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_broker_started_early_is_taken_over_only_if_it_is_the_one_to_run() -> None:
    broker = _broker()
    with Boot() as boot:
        sleeper = [*helper_argv("broker", []), "never", "parsed"]  # exits at once: bad usage
        boot.early_broker = spawn_helper(["sleep", "30"], os.environ, boot.lifeline)
        stale = boot.early_broker
        assert boot.take_broker(broker.argv) is None  # not its command line: stopped
        assert stale.returncode is not None and boot.early_broker is None
        boot.early_broker = spawn_helper(sleeper, os.environ, boot.lifeline)
        taken = boot.take_broker(sleeper)
        assert taken is not None and boot.early_broker is None
        taken.wait(10)
        assert taken.stdout is not None
        taken.stdout.close()
        boot.early_broker = spawn_helper(["sleep", "30"], os.environ, boot.lifeline)
        left = boot.early_broker
    assert left.returncode is not None  # nobody took it: gone with the boot


def test_no_process_for_the_early_broker_leaves_it_to_the_supervisor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    def no_process(*args: Any, **kwargs: Any) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "modules.yaml").write_text("modules: []\n")
    config = load_config(tmp_path / "config")
    monkeypatch.setattr(broker_process, "spawn_helper", no_process)
    with Boot() as boot:
        boot.subreaper = False  # the spawned path, which has no process to give
        broker_process.prestart(config, RunDir(tmp_path / "config", tmp_path / "run"), boot)
        assert boot.early_broker is None  # the supervisor's own start tries again, says why


def test_a_helper_whose_lines_wait_unread_is_not_taken_for_silent() -> None:
    """The loop was held up elsewhere in a turn (a long reload): the broker's `alive` lines wait
    in the pipe, unread. They are read before the helper is judged silent; one that really says
    nothing is killed."""
    import signal
    import sys
    import time

    script = (
        "import time\nprint('ready', flush=True)\n"
        "while True:\n    print('alive', flush=True)\n    time.sleep(0.05)\n"
    )
    broker = _broker()
    broker.silent_after = 0.3
    broker.argv = [sys.executable, "-c", script]
    broker.start()
    try:
        broker.wait_ready(10)
        time.sleep(0.6)  # the stall under test: no read meanwhile
        broker.tick(time.monotonic())
        assert broker._killed_for is None  # its lines were there
        os.kill(broker.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while broker._killed_for is None and time.monotonic() < deadline:
            broker.tick(time.monotonic())
            time.sleep(0.05)
        assert broker._killed_for is not None and "silent for" in broker._killed_for
    finally:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGKILL)
            os.waitpid(broker.pid, 0)


def _pending(fd: int | None) -> int:
    """Bytes waiting unread in the pipe `fd`."""
    assert fd is not None
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_broker_whose_lines_wait_unread_is_up_for_whoever_asks_meanwhile() -> None:
    """A turn held up 1.5 s (a thousand starts): the modules asking whether the bus is up must
    not be told it is down while the broker's `alive` lines wait unread; and whoever was told so
    (a module set waiting on it) is called again when the lines are read."""
    import signal
    import sys
    import time

    script = (
        "import time\nprint('ready', flush=True)\n"
        "while True:\n    print('alive', flush=True)\n    time.sleep(0.02)\n"
    )
    broker = _broker()
    broker.silent_after = 30.0
    broker.argv = [sys.executable, "-c", script]
    called: list[float] = []
    broker.on_ready = lambda: called.append(time.monotonic())
    broker.start()
    try:
        broker.wait_ready(10)
        ready_at, called[:] = broker.ready_at, []
        deadline = time.monotonic() + 10
        while _pending(broker.fd) < 2 * len(b"alive\n") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _pending(broker.fd) >= 2 * len(b"alive\n")  # its lines are there, unread...
        broker._last_heard -= 2.0  # the stall under test: the last read was over 1.5 s ago
        assert broker.up_since() == ready_at  # ...so it is up, as it was all along
        broker.read()  # the loop gets to its pipe: several `alive` lines, our own stall
        assert broker.ready_at == ready_at and called  # waiters are told to try again
    finally:
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGKILL)
            os.waitpid(broker.pid, 0)


def test_unread_lines_are_seen_on_an_fd_past_1023_and_a_closed_pipe_is_no_word() -> None:
    """select() cannot look at an fd past 1023, which a supervisor of a thousand modules gives
    its broker's pipe; and a pipe whose writer is gone, empty, says nothing."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit on open files ({hard}) allows no fd past 1023")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    read_end, write_end = os.pipe()
    high = fcntl.fcntl(read_end, fcntl.F_DUPFD, 1100)
    os.close(read_end)
    broker = _broker()
    broker._fd = high
    try:
        assert not broker._unread()
        os.write(write_end, b"alive\n")
        assert broker._unread()
        os.read(high, 100)
        os.close(write_end)
        write_end = -1
        assert not broker._unread()  # end of file: POLLHUP, no line
    finally:
        os.close(high)
        if write_end >= 0:
            os.close(write_end)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_restarted_broker_is_told_the_redelivering_groups_the_last_one_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """All of them, from the broker's `kept` lines (its counters' line holds only the groups
    that fit in 4000 bytes: about 18); and the note of its exit says which queued events are
    lost uncounted."""
    broker = _broker()
    first = list(broker.argv)
    counters = '{"groups": [{"group": "w", "pattern": "jobs.*", "redeliver": true, "queued": 7}]}'
    broker.on_line(f"{broker_process.GROUPS_PREFIX}{counters}")
    assert "lost, uncounted: w (jobs.*) 7 at its last report" in broker.restart_note()
    groups = [
        {
            "group": f"g{i}",
            "pattern": f"jobs.{'x' * 200}.{i}.*",
            "redeliver": True,
            "per_member": [1],
        }
        for i in range(60)
    ]
    groups += [
        {"group": "x", "pattern": "x.*", "redeliver": False, "per_member": [1]},
        {"group": "gone", "pattern": "old.*", "redeliver": True, "per_member": []},
        {"group": "-evil", "pattern": "a b", "redeliver": True, "per_member": [1]},
    ]
    report = KeptReport()
    report({"groups": groups})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) < 4096 for line in lines)
    report({"groups": groups})  # the same again: said once
    assert capsys.readouterr().out == ""
    for garbage in ('{"part": 0, "of": "1", "groups": []}', '{"part": "0"}', "[1]", "{"):
        broker.on_line(f"kept {garbage}")  # dropped, never raised into the loop
    assert broker.kept == []
    for line in lines:
        broker.on_line(line)
    assert sorted(broker.kept) == sorted((g["group"], g["pattern"]) for g in groups[:60])
    spawned: list[list[str]] = []

    def spawn(argv: list[str], *args: Any) -> Any:
        spawned.append(argv)
        raise BlockingIOError(11, "no process")

    monkeypatch.setattr(broker_process, "spawn_helper", spawn, raising=False)
    monkeypatch.setattr("orchestrator.helper_process.spawn_helper", spawn)
    with pytest.raises(BlockingIOError):
        broker.start()
    keep = [f"--keep-group={name} {pattern}" for name, pattern in broker.kept]
    assert spawned == [[*first, *keep]]
    # None left with members: a start then keeps none of the last one's.
    report({"groups": groups[-2:]})
    for line in capsys.readouterr().out.splitlines():
        broker.on_line(line)
    assert broker.kept == []
    with pytest.raises(BlockingIOError):
        broker.start()
    assert spawned[-1] == first
