"""The broker as a child process of the supervisor (`python -m broker`), restarted when it exits.

libzmq's routing is driven by peers: a subscription, a connection, a frame. Whatever they can make
it do (crash on a pathological subscription, abort on a descriptor shortage, grow without bound)
now ends one broker process, which is back within milliseconds; modules reconnect and re-subscribe
by themselves (ZeroMQ does both), and the events lost meanwhile show as gaps in each publisher's
sequence numbers, counted in `status` as `dropped`.

Only the supervisor's loop calls into it. Its exit comes through the loop's one reaper
(`on_exit`), its output through the loop's poller (`read`), its timers through `tick`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

import psutil
import zmq

from orchestrator.states import ExitStatus

log = logging.getLogger(__name__)

_READY = b"ready"
_ERROR_PREFIX = b"error: "
_MAX_LINE = 4096  # broker output is short log lines; longer ones are cut
_BACKOFF_FIRST = 0.05  # seconds before restarting a broker that died young
_BACKOFF_MAX = 2.0
_STABLE_AFTER = 5.0  # a broker that ran this long starts the backoff from zero again
_MEMORY_CHECK = 2.0  # seconds between checks of the broker's memory
_BLOCK_WHILE_SPAWNING = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

WatchExit = Callable[[int, Callable[[int], None]], None]  # (pid, handler of the raw wait status)


class BrokerStartError(RuntimeError):
    """The broker could not bind its endpoints (or did not say so in time)."""


class BrokerProcess:
    """Starts the broker, reads what it prints, and restarts it with a short backoff."""

    def __init__(
        self,
        *,
        xsub: str,
        xpub: str,
        inject: str,
        max_message_size: int,
        high_water_mark: int,
        memory_limit_mb: float,
        lifeline: int,
        poller: zmq.Poller,
        watch_exit: WatchExit,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._argv = [
            sys.executable,
            "-P",  # not the working directory's `broker`, should a project have one
            "-m",
            "broker",
            "--xsub",
            xsub,
            "--xpub",
            xpub,
            "--inject",
            inject,
            "--max-message-size",
            str(max_message_size),
            "--hwm",
            str(high_water_mark),
            "--lifeline",
            str(lifeline),
        ]
        self._env = {**os.environ, **(env or {})}
        self.memory_limit_mb = memory_limit_mb
        self._lifeline = lifeline
        self._poller = poller
        self._watch_exit = watch_exit
        self._popen: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._stdout: IO[bytes] | None = None
        self._partial = b""
        self.ready = False
        self.started_at = 0.0
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self._delay = 0.0
        self._restart_at: float | None = None
        self._next_memory_check = 0.0
        self._killed_for: str | None = None
        self._stopping = False
        self.rss_mb: float | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def fd(self) -> int | None:
        """The read end of its output pipe, registered in the loop's poller."""
        return self._fd

    # -- starting ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the broker (it binds and says `ready` on its own; see `wait_ready`). Raises
        OSError if no process can be started (see `tick` for restarts)."""
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCK_WHILE_SPAWNING)
        try:
            popen = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # a terminal's Ctrl+C is the supervisor's to handle
                close_fds=True,
                pass_fds=(self._lifeline,),
                env=self._env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._watch_exit(popen.pid, self._exited)  # ours from its first moment
        assert popen.stdout is not None
        self._stdout, popen.stdout = popen.stdout, None  # we read its fd; Popen never does
        self._fd = self._stdout.fileno()
        os.set_blocking(self._fd, False)
        self._popen, self._partial, self.ready = popen, b"", False
        self._killed_for, self._restart_at = None, None
        self.started_at = time.monotonic()
        self._next_memory_check = self.started_at + _MEMORY_CHECK
        self._poller.register(self._fd, zmq.POLLIN)
        log.debug("broker starting (pid %d)", popen.pid)

    def wait_ready(self, timeout: float) -> None:
        """Block until the broker says it is bound; raise BrokerStartError with its reason if it
        cannot bind, exits, or says nothing within `timeout`. Only for the supervisor's start,
        before anything else runs."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            remaining = deadline - time.monotonic()
            if self._fd is None or remaining <= 0:
                raise BrokerStartError("the broker did not start in time")
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                error = self._read_lines()
                if error is not None:
                    raise BrokerStartError(error)

    def read(self) -> None:
        """Consume what the broker printed (the poller found its pipe readable)."""
        error = self._read_lines()
        if error is not None:
            log.error("the broker cannot start: %s", error)

    def _read_lines(self) -> str | None:
        """Log complete lines; returns the broker's start error if it printed one."""
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            self._close_pipe()
            return None if self.ready else "the broker exited before it was ready"
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-_MAX_LINE:]
        error = None
        for raw in lines:
            line = raw[:_MAX_LINE]
            if not self.ready and line == _READY:
                self.ready = True
                log.info("broker forwarding (pid %s)", self.pid)
            elif not self.ready and line.startswith(_ERROR_PREFIX):
                error = line[len(_ERROR_PREFIX) :].decode("utf-8", "replace")
            elif line:
                log.warning("broker: %s", line.decode("utf-8", "replace"))
        return error

    def _close_pipe(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(KeyError):
                self._poller.unregister(self._fd)
            self._fd = None
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None

    # -- exits and restarts -----------------------------------------------------------------------

    def _exited(self, raw: int) -> None:
        """The loop reaped the broker: record how, and schedule its restart."""
        status = ExitStatus.from_wait_status(raw)
        pid = self._popen.pid if self._popen is not None else -1
        if self._popen is not None:
            self._popen.returncode = status.code if status.code is not None else -1
        if self._fd is not None:  # what it printed last, its traceback say
            with contextlib.suppress(OSError):
                self._read_lines()
            self._close_pipe()
        now = time.monotonic()
        lived = now - self.started_at
        self._popen, self.ready, self.rss_mb = None, False, None
        reason = self._killed_for or status.describe()
        self.last_exit = {"description": status.describe(), "reason": reason, "time": time.time()}
        if self._stopping:
            return
        self._delay = 0.0 if lived >= _STABLE_AFTER else max(_BACKOFF_FIRST, self._delay * 2)
        self._delay = min(self._delay, _BACKOFF_MAX)
        self._restart_at = now + self._delay
        log.error(
            "the broker (pid %d) stopped: %s; restarting it in %.0f ms (modules reconnect by"
            " themselves; events sent meanwhile are lost and counted as dropped)",
            pid,
            reason,
            self._delay * 1000,
        )

    def next_deadline(self) -> float | None:
        """When `tick` has something to do."""
        if self._restart_at is not None:
            return self._restart_at
        return self._next_memory_check if self._popen is not None else None

    def tick(self, now: float) -> None:
        """Restart the broker when due; kill it if it outgrew its memory limit."""
        if self._restart_at is not None and now >= self._restart_at and not self._stopping:
            try:
                self.start()
            except OSError as exc:  # no process to be had now (a process or fd limit): later
                self._delay = min(max(_BACKOFF_FIRST, self._delay * 2), _BACKOFF_MAX)
                self._restart_at = now + self._delay
                log.error(
                    "the broker cannot be restarted: %s; trying again in %.0f ms",
                    exc,
                    self._delay * 1000,
                )
                return
            self.restarts += 1
            return
        if self._popen is not None and now >= self._next_memory_check:
            self._next_memory_check = now + _MEMORY_CHECK
            self._check_memory()

    def _check_memory(self) -> None:
        assert self._popen is not None
        try:
            self.rss_mb = psutil.Process(self._popen.pid).memory_info().rss / (1024 * 1024)
        except psutil.Error:
            return
        if self.rss_mb > self.memory_limit_mb and self._killed_for is None:
            self._killed_for = (
                f"used {self.rss_mb:.0f} MB, over bus.broker_memory_limit_mb"
                f" {self.memory_limit_mb:g} (a peer holding too many subscriptions?)"
            )
            log.error("broker (pid %d): %s; killing it", self._popen.pid, self._killed_for)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the broker for good (SIGTERM, then SIGKILL at `timeout`) and reap it. Only at the
        supervisor's end, when nothing else is left to serve."""
        self._stopping = True
        self._restart_at = None
        popen = self._popen
        if popen is None:
            self._close_pipe()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, raw = os.waitpid(popen.pid, os.WNOHANG)
            except ChildProcessError:  # the loop reaped it already
                break
            if pid:
                self._exited(raw)
                break
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(popen.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    _, raw = os.waitpid(popen.pid, 0)
                    self._exited(raw)
                break
            time.sleep(0.005)
        self._popen = None
        self._close_pipe()

    def status(self) -> dict[str, Any]:
        """The broker's part of `status --json` (under `bus`)."""
        return {
            "broker_pid": self.pid,
            "broker_running": self.ready,
            "broker_restarts": self.restarts,
            "broker_last_exit": self.last_exit,
            "broker_rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
        }
