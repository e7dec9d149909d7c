"""The supervisor's side of the fork server (module_sdk/forkserver.py): a warm template process
that forks module processes in about a millisecond instead of starting a new interpreter.

The template runs in its own process group, has the lifeline pipe (so it, too, goes when the
supervisor dies), and answers one request at a time over a SOCK_SEQPACKET socket pair. A module's
environment goes in a memfd attached to its request, which only the forked process reads: the
template, whose memory every later fork inherits, never holds one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import msgpack

from module_sdk.protocol import VERSION
from orchestrator.fork_batches import ForkBatches, Request
from orchestrator.fork_requests import (
    ForkRefusedError,
    ForkServerBootingError,
    ForkServerError,
    environment_file,
    failure,
    refused,
)
from orchestrator.rundir import process_stopped

__all__ = [  # its errors live with the requests' parts; callers find them here
    "ForkRefusedError",
    "ForkServer",
    "ForkServerBootingError",
    "ForkServerError",
    "Request",
]

log = logging.getLogger(__name__)

# It answers in about a millisecond; past this it is stuck (replaced, the module spawned): 1 s,
# not less, for a loaded machine, where a template given up on may still fork late. The
# loop waits that long at most (and _PER_FORK more for each process of a batch), and only for a
# template that is not known to be stopped.
_REPLY_TIMEOUT = 1.0
_PER_FORK = 0.025
# Seconds the template started with the supervisor may take to boot (an interpreter and its
# imports, on a loaded machine). One started later, to replace one that died, is never waited
# for: until it says ready, modules are spawned instead, and the loop goes on.
_BOOT_TIMEOUT = 30.0
_REVIVE_AFTER = 2.0  # seconds between starts of a template only standbys need
_BOOT_LOOK = 0.1  # seconds between looks whether a booting template was stopped


class ForkedTemplate:
    """A template forked from this process: what the Popen of a spawned one tells."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None


def single_threaded() -> bool:
    """Whether this process has one thread: ZeroMQ's and other C libraries' count too, which
    `threading` does not see. A fork of a process with more may inherit a lock held forever."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def environ_as_started() -> bool:
    """Whether `os.environ` is still the environment this process was started with, which
    /proc/PID/environ shows of it and of every fork of it: a supervisor that took systemd's
    NOTIFY_SOCKET out must not fork a template that would show it to every module."""
    try:
        with open("/proc/self/environ", "rb") as environ:
            started = environ.read().split(b"\0")
    except OSError:
        return False
    now = {os.fsencode(key) + b"=" + os.fsencode(value) for key, value in os.environ.items()}
    return {entry for entry in started if b"=" in entry} == now


def no_interpreter_options() -> bool:
    """Whether this interpreter was started without options of its own (`python -O`, `-W`,
    `-X dev`, `-I`, ...): a fork would hand them to every module, which a template started as
    `python -m module_sdk.forkserver` (and every template started later) does not have."""
    argv = getattr(sys, "orig_argv", [])
    first = argv[1] if len(argv) > 1 else ""  # a script, `-m`, `-c`, or an option
    return first in ("-m", "-c") or not first.startswith("-")


def _fork_template(control: int, lifeline: int) -> ForkedTemplate:
    """Fork the template (module_sdk/template_fork.py) serving `control`, with `lifeline`."""
    for stream in (sys.stdout, sys.stderr):  # what is buffered would be written twice
        if stream is not None:  # (None: Python started with that descriptor closed)
            stream.flush()
    pid = os.fork()
    if pid == 0:
        try:
            from module_sdk.template_fork import become_template  # noqa: PLC0415  (child only)

            become_template(control, (lifeline,))
        finally:
            os._exit(70)
    with contextlib.suppress(OSError):  # its own group before anyone may signal it (as Popen's)
        os.setpgid(pid, pid)
    return ForkedTemplate(pid)


class ForkServer(ForkBatches):
    """Starts the template on first use and restarts it if it died."""

    def __init__(self, lifeline: int) -> None:
        self._lifeline = lifeline
        self._proc: subprocess.Popen[bytes] | ForkedTemplate | None = None
        self._sock: socket.socket | None = None
        self._booted = False  # it said ready
        self._patient = False  # started with the supervisor: its boot is waited for
        self._started_at = float("-inf")
        self._first = True  # no template started yet: the first one's boot is waited for
        self._announced = True  # whether `became_ready` told of its latest boot
        self.waited = 0.0  # seconds the loop waited for answers that never came (see `_answer`)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def booted(self) -> bool:
        """Whether there is a template that has said ready (see `became_ready`)."""
        return self._sock is not None and self._booted

    def became_ready(self) -> bool:
        """True once for each template that has booted since the last call (never waits): what
        only a template can make (standbys) can be made again."""
        if self._sock is not None and not self._booted:
            try:
                self._await_boot(block=False)
            except (OSError, ValueError, ForkServerError):  # ValueError: not msgpack
                self.close()
                return False
        if self._booted and not self._announced:
            self._announced = True
            return True
        return False

    def revive(self, needed: Callable[[], bool]) -> None:
        """If there is no template (it died), start one if `needed()` says so: at most once
        every `_REVIVE_AFTER` seconds (asked or started), never waited for (see
        `became_ready`)."""
        now = time.monotonic()
        if self._sock is not None or now - self._started_at < _REVIVE_AFTER:
            return
        self._started_at = now  # asked: not again before _REVIVE_AFTER
        if needed():
            try:
                self._start(patient=False)
            except (OSError, subprocess.SubprocessError) as exc:  # no fd, no process slot left
                log.warning("fork server: cannot start a template (%s); trying again later", exc)

    def fork(
        self,
        name: str,
        env: Mapping[str, str],
        cwd: Path,
        *,
        go: int | None = None,
        ahead: Mapping[str, object] | None = None,
    ) -> tuple[int, BinaryIO]:
        """Fork module `name` from the template: its pid and the read end of its output pipe.
        With `go` (the read end of a pipe), a standby that waits for the word on it
        (module_sdk/standby.py), which does `ahead` (its `bus`, its `source`) while it waits.
        Raises ForkServerError if that fails twice; ForkRefusedError at once if the OS refused a
        process (the template is not to blame)."""
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._start(patient=self._first)
                self._answerable()
                self._booting_check()
                return self._fork(name, env, cwd, go, ahead)
            except (ForkServerBootingError, ForkRefusedError):
                raise
            except (OSError, ValueError, subprocess.SubprocessError, ForkServerError) as exc:
                if isinstance(exc, OSError) and (refusal := refused(exc.errno)) is not None:
                    raise refusal from exc
                log.warning("fork server: %s (attempt %d); restarting it", exc, attempt)
                self.close()
        raise ForkServerError("the fork server failed twice; spawning instead")

    def _answerable(self) -> None:
        """Raise ForkServerError if the template is stopped (SIGSTOP, a debugger): it cannot
        answer, and the loop would wait `_REPLY_TIMEOUT` for nothing."""
        if self._proc is not None and process_stopped(self._proc.pid):
            raise ForkServerError(f"its template (pid {self._proc.pid}) is stopped")

    def _answer(self, forks: int = 1) -> object:
        """The template's answer to the request just sent (for `forks` processes), waiting at
        most `_REPLY_TIMEOUT` (and `_PER_FORK` a process): past that it is stuck, and the time
        lost is added to `waited` (the loop's stall was the template's)."""
        assert self._sock is not None
        asked, timeout = time.monotonic(), _REPLY_TIMEOUT + _PER_FORK * forks
        self._sock.settimeout(timeout)
        try:
            payload = self._sock.recv(65536)
        except TimeoutError:
            self.waited += time.monotonic() - asked
            raise ForkServerError(
                f"its template (pid {self.pid}) did not answer within {timeout:.2g}s"
            ) from None
        finally:
            self._sock.settimeout(_REPLY_TIMEOUT)
        return msgpack.unpackb(payload, raw=False) if payload else {"error": "it exited"}

    def _booting_check(self) -> None:
        """Have a booted template: wait for its boot if it started with the supervisor, else
        raise ForkServerBootingError (the caller spawns instead) unless it has said ready already."""
        if self._booted:
            return
        self._await_boot(block=self._patient)
        if not self._booted:
            raise ForkServerBootingError("the fork server is still starting; spawning instead")

    def _await_boot(self, *, block: bool) -> None:
        """Read the template's first message, `{ready: PID}`: waiting up to the boot timeout if
        `block`, else only if it is there already. Raises OSError (a timeout) or
        ForkServerError (it exited, or said something else)."""
        assert self._sock is not None
        if block:
            self._booting_wait()
            payload = self._sock.recv(256)
        else:
            readable, _, _ = select.select([self._sock], [], [], 0)
            if not readable:
                return
            payload = self._sock.recv(256)
        try:
            message = msgpack.unpackb(payload, raw=False) if payload else None
        except ValueError:  # msgpack's errors: not its first message
            message = payload[:64]
        if not isinstance(message, dict) or "ready" not in message:
            raise ForkServerError(f"it did not boot: {message!r}"[:200] if payload else "it exited")
        self._booted = True
        log.debug("fork server ready (pid %s)", self.pid)

    def _booting_wait(self) -> None:
        """Wait until the booting template has said something (up to the boot timeout), looking
        every `_BOOT_LOOK` whether it was stopped meanwhile (SIGSTOP, a debugger): one stopped
        before it booted held `up` for the whole boot timeout. Raises OSError (the timeout) or
        ForkServerError (stopped)."""
        assert self._sock is not None
        deadline = time.monotonic() + _BOOT_TIMEOUT
        while not select.select([self._sock], [], [], _BOOT_LOOK)[0]:
            if self._proc is not None and process_stopped(self._proc.pid):
                raise ForkServerError(f"its template (pid {self._proc.pid}) is stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"it did not boot within {_BOOT_TIMEOUT:.0f}s")

    def start(self) -> None:
        """Start the template now, so that its boot overlaps the supervisor's own; forks wait
        for it only if it is not ready yet. Called as the supervisor starts, in a process with
        no other thread, its environment as it started and no interpreter option, the
        template is a fork of it
        (module_sdk/template_fork.py): no interpreter start-up, no second import of ZeroMQ.
        Else, and for every template started later (one that died), `python -m
        module_sdk.forkserver`."""
        if self._sock is None:
            fork = single_threaded() and environ_as_started() and no_interpreter_options()
            self._start(patient=True, fork=fork)

    def _start(self, *, patient: bool, fork: bool = False) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            if fork:
                self._proc = _fork_template(theirs.fileno(), self._lifeline)
            else:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "module_sdk.forkserver", str(theirs.fileno())],
                    stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(), self._lifeline),
                    process_group=0,
                    close_fds=True,
                )
        finally:
            theirs.close()
        ours.settimeout(_REPLY_TIMEOUT)
        self._sock = ours
        self._booted, self._patient, self._announced = False, patient, False
        self._first = False
        self._started_at = time.monotonic()
        log.debug("fork server started (pid %d)", self._proc.pid)

    def _fork(
        self,
        name: str,
        env: Mapping[str, str],
        cwd: Path,
        go: int | None,
        ahead: Mapping[str, object] | None,
    ) -> tuple[int, BinaryIO]:
        request: dict[str, object] = {"name": name, "cwd": str(cwd)}
        fds = []
        if go is not None:
            request["standby"] = True
            fds.append(go)
            if ahead:
                request["ahead"] = dict(ahead)
        return self._receive(self._send(request, env, fds))

    def send_main(self, module: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
        """Ask for a fork that runs `module` as `python -P -m module ARGV` would (a helper of
        the supervisor's: the broker), without waiting for the answer: the template may still be
        booting. Returns what `receive` takes, which must come before any other request. Raises
        OSError if the template cannot be asked."""
        if self._sock is None:
            self._start(patient=True)
        request = {"main": module, "argv": list(argv), "cwd": str(cwd)}
        return self._send(request, env, [])

    def receive(self, pending: int) -> tuple[int, BinaryIO]:
        """The answer to `send_main`: the pid and output pipe of the process. Raises OSError or
        ForkServerError (the template is then stopped: the next fork starts a new one, unless
        it was the OS's refusal, ForkRefusedError)."""
        try:
            return self._receive(pending)
        except ForkRefusedError:  # the host's refusal: the template is fine
            raise
        except BaseException:
            self.close()
            raise

    def _send(self, request: Mapping[str, object], env: Mapping[str, str], fds: list[int]) -> int:
        """Send `request` with the write end of a new output pipe, the environment `env` (and
        `fds`); returns the read end."""
        assert self._sock is not None
        environment = environment_file(env)
        try:
            read_end, write_end = os.pipe()
        except BaseException:
            os.close(environment)
            raise
        try:
            message = msgpack.packb({**request, "protocol": VERSION})
            socket.send_fds(self._sock, [message], [write_end, environment, *fds])
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
            os.close(environment)
        return read_end

    def _receive(self, read_end: int) -> tuple[int, BinaryIO]:
        if self._sock is None:  # closed since the request was sent
            os.close(read_end)
            raise ForkServerError("the fork server was stopped")
        try:
            if not self._booted:  # a request sent before it booted (send_main)
                self._await_boot(block=True)
            answer = self._answer()
        except BaseException:
            os.close(read_end)
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int):
            os.close(read_end)
            raise failure(answer)
        return answer["pid"], os.fdopen(read_end, "rb", buffering=0)

    def reaped(self) -> None:
        """The loop reaped the template: forget it (its pid may be reused); the next fork starts
        a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            self._proc.returncode = -1  # so that Popen never waits for it itself
            self._proc = None

    def close(self) -> None:
        """Stop the template and any intermediate of it (its process group), and reap it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # the loop may have reaped it already
                os.waitpid(self._proc.pid, 0)
            self._proc.returncode = -9  # so that Popen never waits for it itself
            self._proc = None
