"""A template that cannot be started (no file descriptor or process slot left) costs the fork, not
the supervisor: every caller gets a ForkServerError (the module is then spawned) or a log line."""

from __future__ import annotations

import errno
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator import forkserver
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
