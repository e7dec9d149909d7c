"""processes.signal_module: a module process no longer in its own group (it moved itself into
another) still gets the signal, by its pid; a reaped one never does (its pid may be another
process's by then)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from orchestrator.processes import ModuleProcess, signal_group, signal_module


def _sleeper() -> subprocess.Popen[bytes]:
    """A child in our own process group: no group has its pid for id."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_process_without_a_group_of_its_own_gets_the_signal_by_its_pid() -> None:
    child = _sleeper()
    try:
        process = ModuleProcess(child.pid, sys.stdin.buffer)
        assert not signal_group(child.pid, signal.SIGKILL)  # no such group
        signal_module(process, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_a_reaped_process_is_never_signalled_by_its_pid() -> None:
    child = _sleeper()
    try:
        process = ModuleProcess(child.pid, sys.stdin.buffer)
        process.reaped(0)  # as if: its pid could be anyone's now
        signal_module(process, signal.SIGKILL)
        with pytest.raises(subprocess.TimeoutExpired):  # a SIGKILL would end it at once
            child.wait(timeout=1)
    finally:
        child.kill()
        child.wait()
