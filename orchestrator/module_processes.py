"""The processes behind the modules: their output pipes, reaping them (and the supervisor's
other children), sweeping what a module left behind, and killing what is left at the end.

A pipe whose read found it all but empty rests for `_REST` before it is read again: a module that
prints a line at a time as fast as it can would otherwise wake the loop for every few lines, and
the loop's turn, not the handling of the lines, would be most of what its output costs.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from orchestrator.cgroups import ModuleCgroups
from orchestrator.child import ManagedChild
from orchestrator.forkserver import ForkServer
from orchestrator.output import READ_SIZE, OutputReader
from orchestrator.processes import (
    ModuleProcess,
    kill_strays,
    reap,
    signal_group,
    signal_module,
)
from orchestrator.resources import ProcessSampler
from orchestrator.states import ExitStatus

log = logging.getLogger(__name__)

_CLOSE_REAP_WAIT = 1.0  # at close, how long a SIGKILLed process may take to be reaped
_REST = 0.005  # seconds a pipe read short is left alone: log lines wait that long at most


class ModuleProcesses:
    """The live module processes by pid, and whose exits the loop hands to whom."""

    def __init__(
        self,
        *,
        cgroups: ModuleCgroups,
        forkserver: ForkServer,
        poller: zmq.Poller,
        sampler: ProcessSampler,
    ) -> None:
        self.by_pid: dict[int, ManagedChild] = {}
        self.cgroups = cgroups
        self.forkserver = forkserver
        self.sampler = sampler
        self._poller = poller
        self._readers: dict[int, OutputReader] = {}  # by fd
        self._reader_of: dict[int, OutputReader] = {}  # by pid, while the process lives
        self._resting: dict[int, float] = {}  # fd -> when to read it again (monotonic)
        self._exit_handlers: dict[int, Callable[[int], None]] = {}

    def watch_exit(self, pid: int, handler: Callable[[int], None] | None) -> None:
        """Hand the raw wait status of child `pid` (not a module: the broker, the bridge) to
        `handler` when the loop reaps it; None forgets `pid` (its owner reaped it itself)."""
        if handler is None:
            self._exit_handlers.pop(pid, None)
        else:
            self._exit_handlers[pid] = handler

    def adopt(self, child: ManagedChild, process: ModuleProcess) -> None:
        """`process` now runs `child`: read its output, reap it."""
        child.process = process
        self.by_pid[process.pid] = child
        reader = OutputReader(process.stdout, child.log)
        self._readers[reader.fd] = reader
        self._reader_of[process.pid] = reader
        self._poller.register(reader.fd, zmq.POLLIN)

    def read_output(self, ready: dict[Any, int]) -> None:
        """Consume the output of every child pipe the poller found readable, and of those whose
        rest is over."""
        now = time.monotonic()
        rested = [fd for fd, until in self._resting.items() if now >= until]
        for fd in rested + [fd for fd in ready if isinstance(fd, int) and fd in self._readers]:
            self._read(fd, now)

    def _read(self, fd: int, now: float) -> None:
        """Read `fd` once. A pipe is either in the poller or resting, until its end of file."""
        got = self._readers[fd].read()
        if got is None:  # end of file: the module and whatever it started are gone
            self._forget(fd)
        elif 0 < got < READ_SIZE:  # it is empty now: let lines gather before the next read
            if fd not in self._resting:
                self._poller.unregister(fd)
            self._resting[fd] = now + _REST
        elif self._resting.pop(fd, None) is not None:  # nothing came, or more than a read's worth
            self._poller.register(fd, zmq.POLLIN)

    def _forget(self, fd: int) -> None:
        if self._resting.pop(fd, None) is None:
            self._poller.unregister(fd)
        del self._readers[fd]

    def next_deadline(self) -> float | None:
        """When a resting pipe is to be read again, if one is."""
        return min(self._resting.values(), default=None)

    def reap(self) -> Iterator[tuple[ManagedChild, int]]:
        """Reap every exited child; yield each module's with its raw wait status, once what it
        left behind is killed. Other children go to their exit handlers."""
        for pid, raw in reap():
            handler = self._exit_handlers.pop(pid, None)
            if handler is not None:
                handler(raw)
                continue
            child = self.by_pid.pop(pid, None)
            reader = self._reader_of.pop(pid, None)
            if reader is not None and self._readers.get(reader.fd) is reader:
                # What it printed last is in its log before its exit is handled (the webhook's
                # log tail), an unterminated last line too, even if a stray still holds the pipe.
                if reader.drain():
                    reader.flush_partial()
                else:
                    self._forget(reader.fd)
            if child is not None:
                child.last_words = reader.last_line if reader is not None else ""
            if child is None or child.process is None:
                if pid == self.forkserver.pid:
                    log.warning("the fork server (pid %d) exited; it restarts when needed", pid)
                    self.forkserver.reaped()
                else:
                    log.debug("reaped process %d (a module's stray)", pid)
                continue
            status = ExitStatus.from_wait_status(raw)
            child.process.reaped(status.code if status.code is not None else -(status.signal or 0))
            # Whatever the module left behind: in its group, in its cgroup, or reparented to us.
            signal_group(pid, signal.SIGKILL)
            left = set(self.cgroups.kill(child.cgroup)) | set(kill_strays(self._ours()))
            if left:
                log.warning("%s left %d process(es) behind; killed them", child.name, len(left))
            self.sampler.forget(pid)
            yield child, raw

    def _ours(self) -> set[int]:
        """The children we started and keep: the live module processes, the fork server and
        those whose exits we watch (the broker). Any other child of ours is a stray of a module
        process that is gone."""
        ours = set(self.by_pid) | set(self._exit_handlers)
        if self.forkserver.pid is not None:
            ours.add(self.forkserver.pid)
        return ours

    def close(self, children: list[ManagedChild]) -> None:
        """Kill whatever is left (normally nothing), reap it, and close the logs."""
        for child in children:
            if child.process is not None:
                signal_module(child.process, signal.SIGKILL)
        # Once a module process is gone, what it left is ours to find: wait for them first.
        deadline = time.monotonic() + _CLOSE_REAP_WAIT
        for pid, child in list(self.by_pid.items()):
            if _reap_one(pid, deadline):
                del self.by_pid[pid]
                if child.process is not None:
                    child.process.reaped(-signal.SIGKILL)
        self.forkserver.close()
        deadline = time.monotonic() + _CLOSE_REAP_WAIT
        for pid in kill_strays(set(self.by_pid) | set(self._exit_handlers)):
            _reap_one(pid, deadline)
        self.cgroups.close()
        for reader in self._readers.values():
            reader.close()
        for child in children:
            child.log.close()


def _reap_one(pid: int, deadline: float) -> bool:
    """Reap `pid`, waiting for it until `deadline` at most; whether it is gone (or not ours)."""
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
