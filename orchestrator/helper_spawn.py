"""How a helper process of the supervisor's (the broker, the cluster bridge) is started: spawned
with its output on a pipe, or forked early by the fork server's template (`ForkedHelper`).
Light on purpose: the boot uses it before the supervisor's heavier imports."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

_BLOCK_WHILE_SPAWNING = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

Popen = subprocess.Popen[bytes]


class ForkedHelper:
    """A helper forked by the fork server's template (`ForkServer.send_main`) rather than spawned:
    what `HelperProcess` uses of a Popen. It is the supervisor's child once the template's
    intermediate process has exited (the supervisor is a child subreaper)."""

    def __init__(self, pid: int, stdout: IO[bytes], args: Sequence[str]) -> None:
        self.pid = pid
        self.stdout: IO[bytes] | None = stdout
        self.args = list(args)
        self.returncode: int | None = None


Started = Popen | ForkedHelper  # a helper process, spawned or forked


def helper_argv(module: str, args: Sequence[str]) -> list[str]:
    """The command line of a helper running `python -m module ARGS`; -P: not the working
    directory's package of that name, should a project have one."""
    return [sys.executable, "-P", "-m", module, *args]


def spawn_helper(argv: Sequence[str], env: Mapping[str, str], lifeline: int) -> Popen:
    """Start a helper process: its output on a pipe, in a process group of its own (a terminal's
    Ctrl+C is the supervisor's to handle), with the lifeline. Raises OSError."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCK_WHILE_SPAWNING)
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            close_fds=True,
            pass_fds=(lifeline,),
            env=env,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
