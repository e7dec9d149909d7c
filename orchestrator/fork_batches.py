"""Forking many module processes with one request to the fork server's template (`up`, a scale
up): a part of `ForkServer` (orchestrator/forkserver.py), whose state it uses."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgpack

from module_sdk.protocol import VERSION
from orchestrator.fork_requests import (
    ForkRefusedError,
    ForkServerBootingError,
    ForkServerError,
    batches,
    environment_file,
    failure,
    refused,
)

log = logging.getLogger("orchestrator.forkserver")

Request = tuple[str, Mapping[str, str], Path]  # a module process to fork: name, env, cwd


class ForkBatches:
    """The batch forks of `ForkServer`."""

    _sock: socket.socket | None
    _first: bool

    if TYPE_CHECKING:

        def _start(self, *, patient: bool) -> None: ...
        def _answerable(self) -> None: ...
        def _booting_check(self) -> None: ...
        def _answer(self, forks: int = 1) -> object: ...
        def close(self) -> None: ...

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
            try:
                self._start(patient=self._first)
            except (OSError, subprocess.SubprocessError) as exc:
                error = refused(getattr(exc, "errno", None)) or ForkServerError(
                    f"cannot start the fork server: {exc}"
                )
                return [error] * len(requests)
        assert self._sock is not None
        # One request is one message, which must fit the socket's send buffer as a whole.
        budget = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
        done = 0
        for batch in batches(entries, budget):
            forked = self._fork_batch_twice(batch, environments[done : done + len(batch)])
            done += len(batch)
            if isinstance(forked, ForkServerError):
                return results + [forked] * (len(entries) - len(results))
            results += forked
        return results

    def _fork_batch_twice(
        self, batch: list[dict[str, object]], environments: Sequence[Mapping[str, str]]
    ) -> list[tuple[int, BinaryIO] | ForkServerError] | ForkServerError:
        """`_fork_batch`, on a new template the second time; the error for every module of it
        if that fails too (or the new template is still booting)."""
        for attempt in (1, 2):
            error: Exception
            try:
                if self._sock is None:
                    self._start(patient=self._first)
                self._answerable()
                self._booting_check()
                return self._fork_batch(batch, environments)
            except (ForkServerBootingError, ForkRefusedError) as exc:
                return exc
            except OSError as exc:
                if (refusal := refused(exc.errno)) is not None:
                    return refusal
                if exc.errno == errno.EMSGSIZE:  # one module's request alone: its directory
                    too_large = ForkServerError(f"its fork request is too large: {exc.strerror}")
                    return [too_large] * len(batch)
                error = exc
            except (ValueError, subprocess.SubprocessError, ForkServerError) as exc:
                error = exc
            log.warning("fork server: %s (attempt %d); restarting it", error, attempt)
            self.close()
        return ForkServerError("the fork server failed twice; spawning instead")

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
            message = msgpack.packb({"batch": batch, "protocol": VERSION})
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
            answer = self._answer(len(batch))
            pids = answer.get("pids") if isinstance(answer, dict) else None
            if (
                not isinstance(answer, dict)
                or not isinstance(pids, list)
                or len(pids) != len(batch)
            ):
                raise failure(answer)
        except BaseException:
            for read_end in read_ends:
                os.close(read_end)
            raise
        codes = answer.get("errnos")
        codes = codes if isinstance(codes, list) and len(codes) == len(pids) else [None] * len(pids)
        results: list[tuple[int, BinaryIO] | ForkServerError] = []
        for pid, code, read_end in zip(pids, codes, read_ends, strict=True):
            if isinstance(pid, int):
                results.append((pid, os.fdopen(read_end, "rb", buffering=0)))
            else:
                os.close(read_end)
                results.append(refused(code) or ForkServerError(str(pid)))
        return results
