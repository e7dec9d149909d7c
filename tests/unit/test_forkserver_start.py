"""A template that cannot be started (no file descriptor or process slot left) costs the fork, not
the supervisor: every caller gets a ForkServerError (the module is then spawned) or a log line."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest

from module_sdk import forkserver as template
from module_sdk.protocol import VERSION
from orchestrator import fork_requests, forkserver
from orchestrator.forkserver import ForkServer, ForkServerError


@pytest.fixture
def starved(monkeypatch: pytest.MonkeyPatch) -> ForkServer:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(forkserver, "_REVIVE_AFTER", 0.0)
    return ForkServer(lifeline=-1)


def test_fork_and_fork_many_fail_as_fork_server_errors(starved: ForkServer) -> None:
    with pytest.raises(ForkServerError):
        starved.fork("m", {}, Path("/"))
    results = starved.fork_many([("a", {}, Path("/")), ("b", {}, Path("/"))])
    assert len(results) == 2 and all(isinstance(r, ForkServerError) for r in results)
    assert starved.pid is None


def test_a_revival_that_cannot_start_is_logged_and_tried_later(
    starved: ForkServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="orchestrator.forkserver"):
        starved.revive(lambda: True)
    assert "cannot start a template" in caplog.text and starved.pid is None
    assert not starved.became_ready()


def test_a_template_that_cannot_fork_answers_an_error_and_serves_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # os.fork() raising EAGAIN (no process slot left) killed the template with a traceback.
    def no_slot() -> int:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(template.os, "fork", no_slot)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serving = threading.Thread(target=template.serve, args=(theirs,), daemon=True)
    serving.start()
    read_end, write_end = os.pipe()
    env = fork_requests.environment_file({})
    request = {"name": "m", "cwd": "/", "protocol": VERSION}
    socket.send_fds(ours, [msgpack.packb(request)], [write_end, env])
    for fd in (write_end, env):
        os.close(fd)
    ours.settimeout(10)
    assert msgpack.unpackb(ours.recv(4096)) == {
        "error": "fork failed: [Errno 11] Resource temporarily unavailable",
        "errno": errno.EAGAIN,  # the host's refusal, told apart from a broken template
    }
    assert os.read(read_end, 1) == b""  # it closed the pipe it was given
    ours.close()  # the supervisor goes: it returns
    serving.join(10)
    assert not serving.is_alive()
    os.close(read_end)
    theirs.close()
