"""A helper process of the supervisor's own (the broker, the cluster bridge): spawned, its `ready`
line awaited, its output logged, reaped through the loop's one reaper, restarted with a short
backoff when it exits, and killed if it outgrows a memory limit.

Whatever peers can make such a process do (libzmq crashing on a pathological subscription, a NATS
client stuck on a network) ends that one process, never the supervisor. Only the supervisor's loop
calls into it: its exit comes through the loop's reaper (`watch_exit`), its output through the
loop's poller (`read`), its timers through `tick`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import psutil
import zmq

from orchestrator.helper_spawn import Started, helper_argv, spawn_helper
from orchestrator.states import ExitStatus
from orchestrator.terminal import terminal_safe

log = logging.getLogger(__name__)

_READY = b"ready"
_ALIVE = b"alive"  # a helper with `silent_after` says it every second once ready
_QUIET = 1.5  # seconds without `alive` after which a helper is not relied on (see up_since)
_ERROR_PREFIX = b"error: "
_MAX_LINE = 4096  # helper output is short log lines; longer ones are cut
_BACKOFF_FIRST = 0.05  # seconds before restarting a helper that died young
_BACKOFF_MAX = 2.0
_STABLE_AFTER = 5.0  # a helper that ran this long starts the backoff from zero again
_MEMORY_CHECK = 2.0  # seconds between checks of the helper's memory

# (pid, handler of its raw wait status), or (pid, None): forget it, it was reaped elsewhere
WatchExit = Callable[[int, Callable[[int], None] | None], None]


class HelperStartError(RuntimeError):
    """The helper could not start (it said why, exited, or did not say ready in time)."""


class HelperProcess:
    """Starts one helper process, reads what it prints, and restarts it with a short backoff.

    `name` names it in logs ("the broker"); `module` is what `python -P -m` runs, with `args`;
    `env` is added to the supervisor's environment for it. `restart_note` ends the log line of
    an unexpected exit (what the user loses meanwhile); `memory_setting` names the limit's key.
    Subclasses may interpret their lines (`on_line`) and add to `status`. A line `error: <why>`
    says why the helper cannot start or, once ready, why it is about to exit (the reason of that
    exit in the log and in `last_exit`).
    """

    # Seconds without a line from the helper after which it is taken for stopped or hung
    # (SIGSTOP, a deadlock) and killed, to be restarted; None: it does not say `alive`.
    silent_after: float | None = None

    def __init__(
        self,
        *,
        name: str,
        module: str,
        args: Sequence[str],
        memory_limit_mb: float | None,
        lifeline: int,
        poller: zmq.Poller,
        watch_exit: WatchExit,
        env: Mapping[str, str] | None = None,
        restart_note: str = "",
        memory_setting: str = "",
    ) -> None:
        self.name = name
        self.argv = helper_argv(module, args)
        self._env = {**os.environ, **(env or {})}
        self._restart_note = restart_note
        self._memory_setting = memory_setting
        self.memory_limit_mb = memory_limit_mb
        self._lifeline = lifeline
        self._poller = poller
        self._watch_exit = watch_exit
        self._popen: Started | None = None
        self._fd: int | None = None
        self._stdout: IO[bytes] | None = None
        self._partial = b""
        self.ready = False
        self.ready_at: float | None = None  # when it last said ready; None while it has not
        self.was_ready = False  # it said ready at least once (this supervisor's run)
        self.on_ready: Callable[[], None] = lambda: None  # called each time it says ready
        self.started_at = 0.0
        self.restarts = 0
        self.last_exit: dict[str, Any] | None = None
        self._delay = 0.0
        self._restart_at: float | None = None
        self._next_memory_check = 0.0
        self._killed_for: str | None = None
        self._exits_for: str | None = None  # what it said (`error: <why>`) before it exits
        self._stopping = False
        self.rss_mb: float | None = None

    def up_since(self) -> float | None:
        """When it last said ready or spoke again after a silence (monotonic); None while it is
        down, silent (`_quiet`), or not ready again after having been ready; 0.0 before its
        first ready (whoever needs it then simply waits for it)."""
        if self.ready_at is None:
            return None if self.was_ready else 0.0
        quiet = self._quiet(time.monotonic()) and not self._unread()
        return None if quiet else self.ready_at

    def _unread(self) -> bool:
        """Whether what it printed waits in the pipe: it spoke, our loop did not listen (held
        up elsewhere in this turn, by a thousand starts or a long reload)."""
        if self._fd is None:
            return False
        poll = select.poll()  # not select(): the pipe's fd may be past 1023 (a thousand modules)
        poll.register(self._fd, select.POLLIN)
        try:  # a pipe whose writer is gone, with nothing in it, is POLLHUP alone: not a word
            return any(events & select.POLLIN for _, events in poll.poll(0))
        except OSError:
            return False

    def _quiet(self, now: float) -> bool:
        """Whether a helper that says `alive` every second has missed more than one: not to be
        relied on (it is killed only after `silent_after`)."""
        return self.silent_after is not None and now - self._last_heard > _QUIET

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def fd(self) -> int | None:
        """The read end of its output pipe, registered in the loop's poller."""
        return self._fd

    # -- starting ---------------------------------------------------------------------------------

    def start(self, started: Started | None = None) -> None:
        """Spawn the helper (it says `ready` on its own; see `wait_ready`), or take `started`,
        the same helper spawned before the loop was there (`spawn_helper`). Raises OSError if no
        process can be started (see `tick` for restarts)."""
        popen = started or spawn_helper(self.argv, self._env, self._lifeline)
        self._watch_exit(popen.pid, self._exited)  # ours from its first moment
        assert popen.stdout is not None
        self._stdout, popen.stdout = popen.stdout, None  # we read its fd; Popen never does
        self._fd = self._stdout.fileno()
        os.set_blocking(self._fd, False)
        self._popen, self._partial, self.ready, self.ready_at = popen, b"", False, None
        self._killed_for, self._exits_for, self._restart_at = None, None, None
        self.started_at = time.monotonic()
        self._last_heard = self.started_at
        self._next_memory_check = self.started_at + _MEMORY_CHECK
        self._poller.register(self._fd, zmq.POLLIN)
        log.debug("%s starting (pid %d)", self.name, popen.pid)

    def wait_ready(self, timeout: float) -> None:
        """Block until the helper says it is ready; raise HelperStartError with its reason if it
        cannot start, exits, or says nothing within `timeout`. Only for the supervisor's start,
        before anything else runs."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            remaining = deadline - time.monotonic()
            if self._fd is None or remaining <= 0:
                raise HelperStartError(f"the {self.name} did not start in time")
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                error = self._read_lines()
                if error is not None:
                    raise HelperStartError(error)

    def read(self) -> None:
        """Consume what the helper printed (the poller found its pipe readable)."""
        error = self._read_lines()
        if error is not None:
            log.error("the %s cannot start: %s", self.name, error)

    def _read_lines(self) -> str | None:
        """Handle complete lines; returns the helper's start error if it printed one."""
        assert self._fd is not None
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            self._close_pipe()
            return None if self.ready else f"the {self.name} exited before it was ready"
        now = time.monotonic()
        # Stopped (SIGSTOP) a while, and back: quiet since we last read, and not several `alive`
        # lines waiting (those are our loop's own stall, the helper spoke all along).
        was_quiet = self.ready and self._quiet(now)
        self._last_heard = now
        if was_quiet and data.count(_ALIVE) < 2:
            log.info("%s (pid %s) speaks again", self.name, self.pid)
            self.ready_at = now
        if was_quiet:  # whoever found it quiet meanwhile waits for it: they try again now
            self.on_ready()
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-_MAX_LINE:]
        error = None
        for raw in lines:
            line = raw[:_MAX_LINE]
            if line == _ALIVE:
                continue
            if not self.ready and line == _READY:
                self.ready, self.ready_at, self.was_ready = True, time.monotonic(), True
                log.info("%s ready (pid %s)", self.name, self.pid)
                self.on_ready()
            elif line.startswith(_ERROR_PREFIX):  # it cannot start, or (ready) it ends: why
                why = _shown(line[len(_ERROR_PREFIX) :])
                if self.ready:
                    self._exits_for = why
                else:
                    error = why
            elif line:
                self.on_line(_shown(line))
        return error

    def on_line(self, line: str) -> None:
        """A line the helper printed once ready (a log line, by default), terminal-safe."""
        log.warning("%s: %s", self.name, line)

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
        """The loop reaped the helper: record how, and schedule its restart."""
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
        self._popen, self.ready, self.ready_at, self.rss_mb = None, False, None, None
        reason = self._killed_for or self._exits_for or status.describe()
        self.last_exit = {"description": status.describe(), "reason": reason, "time": time.time()}
        if self._stopping:
            return
        self._delay = 0.0 if lived >= _STABLE_AFTER else max(_BACKOFF_FIRST, self._delay * 2)
        self._delay = min(self._delay, _BACKOFF_MAX)
        self._restart_at = now + self._delay
        log.error(
            "the %s (pid %d) stopped: %s; restarting it in %.0f ms%s",
            self.name,
            pid,
            reason,
            self._delay * 1000,
            self.restart_note(),
        )

    def restart_note(self) -> str:
        """What ends the log line of an unexpected exit: what the user loses meanwhile."""
        return self._restart_note

    def schedule_restart(self) -> None:
        """Try to start it again after the backoff (a first start found no process to be had)."""
        self._delay = min(max(_BACKOFF_FIRST, self._delay * 2), _BACKOFF_MAX)
        self._restart_at = time.monotonic() + self._delay

    def next_deadline(self) -> float | None:
        """When `tick` has something to do."""
        if self._restart_at is not None:
            return self._restart_at
        if self._popen is None:
            return None
        if self.silent_after is not None and self.ready and self._killed_for is None:
            return min(self._next_memory_check, self._last_heard + self.silent_after)
        return self._next_memory_check

    def tick(self, now: float) -> None:
        """Restart the helper when due; kill it if it outgrew its memory limit."""
        if self._restart_at is not None and now >= self._restart_at and not self._stopping:
            try:
                self.start()
            except OSError as exc:  # no process to be had now (a process or fd limit): later
                self._delay = min(max(_BACKOFF_FIRST, self._delay * 2), _BACKOFF_MAX)
                self._restart_at = now + self._delay
                log.error(
                    "the %s cannot be restarted: %s; trying again in %.0f ms",
                    self.name,
                    exc,
                    self._delay * 1000,
                )
                return
            self.restarts += 1
            return
        if self._popen is not None and now >= self._next_memory_check:
            self._next_memory_check = now + _MEMORY_CHECK
            self._check_memory()
        if self._silent(now) and self._fd is not None:
            self.read()  # what it said while the loop was held up elsewhere in this turn
        if self._silent(now):
            assert self._popen is not None
            self._killed_for = f"silent for {now - self._last_heard:.0f}s (stopped, or hung)"
            log.error("%s (pid %d): %s; killing it", self.name, self._popen.pid, self._killed_for)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)

    def _silent(self, now: float) -> bool:
        """Whether a helper that says `alive` every second has not for `silent_after`."""
        return (
            self.silent_after is not None
            and self._popen is not None
            and self.ready
            and self._killed_for is None
            and now - self._last_heard > self.silent_after
        )

    def memory_hint(self) -> str:
        """What may have made it grow, appended to the reason of a kill for memory."""
        return ""

    def _check_memory(self) -> None:
        assert self._popen is not None
        try:
            self.rss_mb = psutil.Process(self._popen.pid).memory_info().rss / (1024 * 1024)
        except psutil.Error:
            return
        limit = self.memory_limit_mb
        if limit is not None and self.rss_mb > limit and self._killed_for is None:
            self._killed_for = (
                f"used {self.rss_mb:.0f} MB, over {self._memory_setting} {limit:g}"
                + self.memory_hint()
            )
            log.error("%s (pid %d): %s; killing it", self.name, self._popen.pid, self._killed_for)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)

    # -- stopping ---------------------------------------------------------------------------------

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the helper for good (SIGTERM, then SIGKILL at `timeout`) and reap it. At the
        supervisor's end, or when a reload removes it."""
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
        self._watch_exit(popen.pid, None)  # reaped here: its pid may be a module's next
        self._popen = None
        self._close_pipe()

    @property
    def state(self) -> str:
        """running, starting, restarting (waiting out its backoff) or stopped."""
        if self.ready:
            return "running"
        if self._popen is not None:
            return "starting"
        return "restarting" if self._restart_at is not None else "stopped"

    def status(self) -> dict[str, Any]:
        """Its row under `system` in `status --json`."""
        return {
            "name": self.name,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "rss_mb": None if self.rss_mb is None else round(self.rss_mb, 1),
        }


def _shown(line: bytes) -> str:
    """A helper's line as the supervisor keeps it (a reason in `status`, a line in app.log and on
    the console): what a NATS server said reaches it, escape sequences and all."""
    return terminal_safe(line.decode("utf-8", "replace"))
