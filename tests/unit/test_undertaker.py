"""A module process's undertaker (module_sdk/undertaker.py), without cgroups: once the module
process dies in its orphan grace, what it started is killed at once, not at the grace's end; a
module process still there past its grace (its own timer cannot run) is killed with its tree; the
undertaker goes either way. Each "module process" here is a process group of its own, which its
undertaker kills last."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import wait_until

from module_sdk.process import proc_stat

# argv: how long its grace lasts, and what it does then: "dies" at once, or "hangs" for good.
MODULE = """
import os, subprocess, sys, time
from module_sdk.undertaker import summon

sleeper = subprocess.Popen(["sleep", "3600"], start_new_session=True)  # out of its group
undertaker = summon(time.monotonic() + float(sys.argv[1]), None)
print(sleeper.pid, undertaker, flush=True)
if sys.argv[2] == "dies":
    os._exit(1)
time.sleep(3600)
"""


def _gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat.state == "Z"


class Started:
    """The processes a test starts, and those they start; whatever of them is still running
    after the test (a failure's) is killed."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []
        self.others: dict[int, int] = {}  # pid -> its start, so as never to kill another's

    def add(self, pid: int) -> int:
        stat = proc_stat(pid)
        if stat is not None:
            self.others[pid] = stat.start
        return pid

    def end(self) -> None:
        for pid, start in self.others.items():
            stat = proc_stat(pid)
            if stat is not None and stat.start == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()


@pytest.fixture
def started() -> Iterator[Started]:
    processes = Started()
    yield processes
    processes.end()


def _module(started: Started, grace: float, then: str) -> tuple[int, int]:
    """A module process with a grace of `grace` seconds that then `dies` or `hangs`; the pids of
    the process it started (in a session of its own) and of its undertaker."""
    module = subprocess.Popen(
        [sys.executable, "-c", MODULE, str(grace), then],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,  # the undertaker kills the module's group: not the test runner's
    )
    started.children.append(module)
    assert module.stdout is not None
    line = module.stdout.readline().split()
    assert len(line) == 2 and line[1] != "None", line
    return started.add(int(line[0])), started.add(int(line[1]))


def test_a_module_process_that_dies_in_its_grace_takes_its_tree_with_it_at_once(
    started: Started,
) -> None:
    sleeper, undertaker = _module(started, 3600, "dies")
    wait_until(lambda: _gone(sleeper), 10, "the sleeper killed long before the grace is over")
    wait_until(lambda: _gone(undertaker), 10, "the undertaker gone too")


def test_a_module_process_hung_past_its_grace_is_killed_with_its_tree_and_undertaker(
    started: Started,
) -> None:
    sleeper, undertaker = _module(started, 0.1, "hangs")
    module = started.children[0]
    wait_until(lambda: module.poll() is not None, 15, "the module process killed")
    assert module.returncode == -9
    wait_until(lambda: _gone(sleeper), 10, "the sleeper killed")
    wait_until(lambda: _gone(undertaker), 10, "the undertaker gone")
