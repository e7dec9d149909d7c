"""A module process's undertaker (module_sdk/undertaker.py), without cgroups: once the module
process dies in its orphan grace, what it started is killed at once, not at the grace's end; a
module process still there past its grace (its own timer cannot run) is killed with its tree; the
undertaker goes either way. Each "module process" here is a process group of its own, which its
undertaker kills last. And the next `up` does not count an undertaker among what a module left
in its cgroup."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from module_sdk.process import PR_SET_NAME, proc_stat
from module_sdk.undertaker import COMM, is_undertaker
from orchestrator.cgroups import ModuleCgroups

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

NAMED = f"""
from module_sdk.process import prctl
prctl({PR_SET_NAME}, {COMM!r})
print("named", flush=True)
import time
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


# An orphaned module process with no process of its own that hangs in C code holding the GIL
# (no timer, no thread of its can run); with "handles", it has a SIGALRM handler of its own.
HANGS_IN_C = """
import signal, sys
from module_sdk.undertaker import Grace

if sys.argv[1] == "handles":
    signal.signal(signal.SIGALRM, lambda *_: None)
grace = Grace(lambda: None)
grace.start()
if sys.argv[1] == "cancels":
    signal.alarm(0)  # as a shutdown() cancelling a timeout of its own would
print(grace.undertaker, flush=True)
sum(range(10**12))
"""


@pytest.mark.parametrize("alarm", ["default", "handles", "cancels"])
def test_a_module_process_hung_in_c_without_children_still_ends(
    started: Started, alarm: str
) -> None:
    module = subprocess.Popen(
        [sys.executable, "-c", HANGS_IN_C, alarm],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    started.children.append(module)
    assert module.stdout is not None
    undertaker = module.stdout.readline().strip()
    # Summoned even with no process to kill: only it can end a process hung where no Python
    # runs (an alarm was disarmed by a SIGALRM handler of the module's, or by alarm(0)).
    assert undertaker.isdigit(), undertaker
    started.add(int(undertaker))
    wait_until(lambda: module.poll() is not None, 15, "the hung module process ended")
    assert module.returncode == -signal.SIGKILL, module.returncode


def test_the_next_up_kills_an_undertaker_in_a_cgroup_but_does_not_count_it(
    tmp_path: Path, started: Started, caplog: pytest.LogCaptureFixture
) -> None:
    named = subprocess.Popen(
        [sys.executable, "-c", NAMED], stdout=subprocess.PIPE, text=True, process_group=0
    )
    other = subprocess.Popen(["sleep", "3600"], text=True, process_group=0)
    started.children.extend((named, other))
    assert named.stdout is not None and named.stdout.readline() == "named\n"
    assert is_undertaker(named.pid) and not is_undertaker(other.pid)
    group = tmp_path / "orchestrator-k" / "m"  # a cgroup left by a SIGKILLed supervisor
    group.mkdir(parents=True)
    (group / "cgroup.procs").write_text(f"{named.pid}\n{other.pid}\n")
    with caplog.at_level(logging.WARNING, logger="orchestrator.cgroups"):
        ModuleCgroups("k", root=tmp_path, v1_mounts={})
    assert (group / "cgroup.kill").read_text() == "1\n"  # the kernel would kill both
    said = [r.getMessage() for r in caplog.records if "an earlier run left" in r.getMessage()]
    assert said == [f"m: killed 1 process(es) an earlier run left in its cgroup (pids {other.pid})"]
