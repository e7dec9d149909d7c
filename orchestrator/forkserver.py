"""The supervisor's side of the fork server (module_sdk/forkserver.py): a warm template process
that forks module processes in about a millisecond instead of starting a new interpreter.

The template runs in its own process group, has the lifeline pipe (so it, too, goes when the
supervisor dies), and answers one request at a time over a SOCK_SEQPACKET socket pair. A module's
environment goes in a memfd attached to its request, which only the forked process reads: the
template, whose memory every later fork inherits, never holds one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import msgpack

from module_sdk.protocol import FORK_BATCH_MAX

log = logging.getLogger(__name__)

_REPLY_TIMEOUT = 2.0  # it answers in about a millisecond; past this it is stuck: restart it

Request = tuple[str, Mapping[str, str], Path]  # a module process to fork: name, env, cwd


class ForkServerError(RuntimeError):
    """The template could not fork a module process."""


class ForkServer:
    """Starts the template on first use and restarts it if it died."""

    def __init__(self, lifeline: int) -> None:
        self._lifeline = lifeline
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

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
        Raises ForkServerError if that fails twice."""
        for attempt in (1, 2):
            if self._sock is None:
                self._start()
            try:
                return self._fork(name, env, cwd, go, ahead)
            except (OSError, ValueError, ForkServerError) as exc:
                log.warning("fork server: %s (attempt %d); restarting it", exc, attempt)
                self.close()
        raise ForkServerError("the fork server failed twice; spawning instead")

    def fork_many(
        self, requests: Sequence[Request]
    ) -> list[tuple[int, BinaryIO] | ForkServerError]:
        """Fork several module processes: in batches, each one request answered by one
        intermediate that forks them all (one round trip, one intermediate, instead of one of
        each per module). Each result is `fork`'s, or the error that module had: that of a
        template that failed twice for every module from that batch on."""
        results: list[tuple[int, BinaryIO] | ForkServerError] = []
        entries: list[dict[str, object]] = [
            {"name": name, "cwd": str(cwd)} for name, _, cwd in requests
        ]
        environments = [env for _, env, _ in requests]
        if self._sock is None:
            self._start()
        assert self._sock is not None
        # One request is one message, which must fit the socket's send buffer as a whole.
        budget = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
        done = 0
        for batch in _batches(entries, budget):
            forked = self._fork_batch_twice(batch, environments[done : done + len(batch)])
            done += len(batch)
            if forked is None:
                failed = ForkServerError("the fork server failed twice; spawning instead")
                return results + [failed] * (len(entries) - len(results))
            results += forked
        return results

    def _fork_batch_twice(
        self, batch: list[dict[str, object]], environments: Sequence[Mapping[str, str]]
    ) -> list[tuple[int, BinaryIO] | ForkServerError] | None:
        """`_fork_batch`, on a new template the second time; None if that fails too."""
        for attempt in (1, 2):
            if self._sock is None:
                self._start()
            error: Exception
            try:
                return self._fork_batch(batch, environments)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:  # one module's request alone: its directory
                    too_large = ForkServerError(f"its fork request is too large: {exc.strerror}")
                    return [too_large] * len(batch)
                error = exc
            except (ValueError, ForkServerError) as exc:
                error = exc
            log.warning("fork server: %s (attempt %d); restarting it", error, attempt)
            self.close()
        return None

    def _fork_batch(
        self, batch: list[dict[str, object]], environments: Sequence[Mapping[str, str]]
    ) -> list[tuple[int, BinaryIO] | ForkServerError]:
        assert self._sock is not None
        pipes: list[tuple[int, int]] = []
        files: list[int] = []
        try:
            for env in environments:
                files.append(environment_file(env))
            for _ in batch:
                pipes.append(os.pipe())
            message = msgpack.packb({"batch": batch})
            socket.send_fds(self._sock, [message], [write_end for _, write_end in pipes] + files)
        except BaseException:
            for read_end, _ in pipes:
                os.close(read_end)
            raise
        finally:
            for fd in [write_end for _, write_end in pipes] + files:
                os.close(fd)
        read_ends = [read_end for read_end, _ in pipes]
        try:
            payload = self._sock.recv(65536)
            answer = msgpack.unpackb(payload, raw=False) if payload else {"error": "it exited"}
            pids = answer.get("pids") if isinstance(answer, dict) else None
            if not isinstance(pids, list) or len(pids) != len(batch):
                error = answer.get("error") if isinstance(answer, dict) else answer
                raise ForkServerError(str(error))
        except BaseException:
            for read_end in read_ends:
                os.close(read_end)
            raise
        results: list[tuple[int, BinaryIO] | ForkServerError] = []
        for pid, read_end in zip(pids, read_ends, strict=True):
            if isinstance(pid, int):
                results.append((pid, os.fdopen(read_end, "rb", buffering=0)))
            else:
                os.close(read_end)
                results.append(ForkServerError(str(pid)))
        return results

    def start(self) -> None:
        """Start the template now (it takes an interpreter's start-up to be ready), so that its
        boot overlaps the supervisor's own; forks wait for it only if it is not ready yet."""
        if self._sock is None:
            self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
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
            self._start()
        request = {"main": module, "argv": list(argv), "cwd": str(cwd)}
        return self._send(request, env, [])

    def receive(self, pending: int) -> tuple[int, BinaryIO]:
        """The answer to `send_main`: the pid and output pipe of the process. Raises OSError or
        ForkServerError (the template is then stopped: the next fork starts a new one)."""
        try:
            return self._receive(pending)
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
            socket.send_fds(self._sock, [msgpack.packb(request)], [write_end, environment, *fds])
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
            payload = self._sock.recv(65536)
            answer = msgpack.unpackb(payload, raw=False) if payload else {"error": "it exited"}
        except BaseException:
            os.close(read_end)
            raise
        if not isinstance(answer, dict) or not isinstance(answer.get("pid"), int):
            os.close(read_end)
            raise ForkServerError(str(answer.get("error") if isinstance(answer, dict) else answer))
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


def environment_file(env: Mapping[str, str]) -> int:
    """A memfd (close-on-exec) holding `env` as a msgpack map, for the forked process to read:
    only it ever does."""
    fd = os.memfd_create("module-env", os.MFD_CLOEXEC)
    try:
        data = memoryview(msgpack.packb(dict(env)))
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _batches(entries: list[dict[str, object]], budget: int) -> list[list[dict[str, object]]]:
    """`entries` in order, cut where a batch would exceed `FORK_BATCH_MAX` pipes or `budget`
    bytes (an entry larger than that goes alone)."""
    batches: list[list[dict[str, object]]] = []
    size = 0
    for entry in entries:
        length = len(msgpack.packb(entry))
        if not batches or len(batches[-1]) >= FORK_BATCH_MAX or size + length > budget:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += length
    return batches
