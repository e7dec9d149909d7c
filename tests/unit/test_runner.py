"""The shim's side of run(): one thread per request, results handed back through a pipe."""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

from helpers import wait_until

from module_sdk.runner import Runner


def test_runs_report_their_result_and_wake_the_loop() -> None:
    release = threading.Event()
    calls: list[int] = []

    def run() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("second run")
        release.wait(5)

    runner = Runner(run, pid=7)
    try:
        for bad in ({"id": "1"}, {"id": True}, {}, {"id": None}):
            runner.request(bad)  # ignored: the supervisor always sends an int
        runner.request({"id": 1})
        wait_until(lambda: calls, 5, "the first call")
        runner.request({"id": 2})  # runs while the first is still in run()
        assert select.select([runner.fd], [], [], 5)[0]
        failed = runner.results()
        assert [(r["id"], r["ok"]) for r in failed] == [(2, False)]
        assert failed[0]["error"] == "run() raised ValueError: second run"
        release.set()
        assert select.select([runner.fd], [], [], 5)[0]
        done = wait_until(runner.results, 5, "the first result")
        assert [(r["id"], r["ok"], r["pid"]) for r in done] == [(1, True, 7)]
        assert not select.select([runner.fd], [], [], 0)[0]  # drained
    finally:
        release.set()
        runner.close()


def test_a_run_that_calls_sys_exit_is_a_failed_run_not_a_lost_one() -> None:
    """Without a result the scheduler would hold the run as in progress for good, and with
    `overlap: skip` skip every later one."""

    def run() -> None:
        raise SystemExit(0)

    runner = Runner(run, pid=7)
    try:
        runner.request({"id": 1})
        (result,) = wait_until(runner.results, 5, "the run's result")
        assert (result["id"], result["ok"]) == (1, False)
        assert result["error"] == "run() raised SystemExit: 0"
    finally:
        runner.close()


def test_a_run_ending_after_the_module_stopped_writes_to_no_reused_descriptor(
    tmp_path: Path,
) -> None:
    """close() closed the wake-up pipe while a run went on; when it ended it wrote its wake-up
    byte to that number: EBADF in the thread, or into whatever file took the number since."""
    release = threading.Event()
    runner = Runner(release.wait, pid=1)
    runner.request({"kind": "run", "id": 1})
    wake_write = runner._wake_write
    runner.close()
    other = tmp_path / "other"
    fd = os.open(other, os.O_RDWR | os.O_CREAT)  # likely the number the pipe had
    try:
        if fd != wake_write:
            os.dup2(fd, wake_write)  # make it so
        errors: list[BaseException] = []
        hook, threading.excepthook = (
            threading.excepthook,
            lambda args: errors.append(args.exc_value),
        )
        try:
            release.set()
            wait_until(
                lambda: not any(t.name == "run-1" for t in threading.enumerate()), 10, "the run"
            )
        finally:
            threading.excepthook = hook
        assert errors == [] and other.read_bytes() == b""
    finally:
        os.close(fd)
        if fd != wake_write:
            os.close(wake_write)
