"""module_sdk.stopsignals: only SIGTERM, SIGINT and SIGHUP stop a module process; a signal the
module handles itself only wakes the loop; a stop still arrives when asyncio took the wake-up
fd; a fork of the module process gets the default handling back and no share of our pipe.

Each case runs in a fresh interpreter: it installs process-wide signal handlers (and forks)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import os, select, signal
from module_sdk.stopsignals import StopSignals

def woke(fd, timeout=10.0):
    return bool(select.select([fd], [], [], timeout)[0])

stop = StopSignals()
"""


def _run(script: str) -> None:
    source = PRELUDE + textwrap.dedent(script) + "\nprint('ok')\n"
    result = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr


def test_a_signal_the_module_handles_wakes_the_loop_but_asks_no_stop() -> None:
    _run(
        """
        got = []
        signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == [signal.SIGUSR1], got
        assert woke(stop.read_fd)
        assert stop.requested() is None
        assert not woke(stop.read_fd, 0)  # emptied
        """
    )


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_each_stop_signal_asks_a_stop(sig: str) -> None:
    _run(
        f"""
        os.kill(os.getpid(), signal.{sig})
        assert woke(stop.read_fd)
        assert stop.requested() == signal.{sig}
        """
    )


def test_a_stop_arrives_when_asyncio_took_the_wakeup_fd() -> None:
    _run(
        """
        import asyncio
        assert not stop.wakeup_fd_taken()
        loop = asyncio.new_event_loop()
        loop.add_signal_handler(signal.SIGUSR2, lambda: None)
        assert stop.wakeup_fd_taken()
        assert stop.wakeup_fd_taken()  # theirs is left in place
        os.kill(os.getpid(), signal.SIGTERM)
        assert woke(stop.read_fd)  # written by our handler, not by the wake-up fd
        assert stop.requested() == signal.SIGTERM
        loop.close()  # it gives the wake-up fd up: ours is put back
        assert not stop.wakeup_fd_taken()
        """
    )


def test_a_fork_gets_default_handling_and_no_share_of_the_pipe() -> None:
    _run(
        """
        pid = os.fork()  # one child, which ends below whatever happens
        if pid == 0:
            try:
                default = (
                    signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
                    and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
                    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
                    and signal.set_wakeup_fd(-1) == -1
                )
                if default:
                    os.kill(os.getpid(), signal.SIGTERM)  # Process.terminate(): it must end
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM, status
        assert not woke(stop.read_fd, 0)  # the child is gone: it wrote nothing
        assert stop.requested() is None
        """
    )


def test_a_fork_signalled_at_once_ends_by_that_signal() -> None:
    """SIGTERM sent as soon as fork() returns (`Process.terminate()` right after `start()`):
    it waits, blocked, until the child has the default handling, instead of running our
    handler there and being lost."""
    _run(
        """
        import time
        pid = os.fork()
        if pid == 0:
            time.sleep(20)  # only a lost SIGTERM lets it get past this
            os._exit(3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGTERM, status
        assert stop.requested() is None
        """
    )
