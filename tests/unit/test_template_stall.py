"""A fork server's template that does not answer (hung, or stopped after it was looked at) costs
the loop at most the reply timeout, and the log names it as the cause of that stall instead of
blaming something outside the supervisor. (A template known to be stopped is not waited for at
all: tests/integration/test_forkserver.py.)"""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import forkserver
from orchestrator.forkserver import ForkServer, ForkServerError
from orchestrator.health import Health


def test_a_template_that_does_not_answer_is_named_and_the_wait_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forkserver, "_REPLY_TIMEOUT", 0.05)
    monkeypatch.setattr(forkserver, "_PER_FORK", 0.0)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # nobody answers
    server = ForkServer(lifeline=-1)
    ours.settimeout(0.05)
    server._sock, server._booted, server._first = ours, True, False
    try:
        with pytest.raises(
            ForkServerError, match=r"its template \(pid None\) did not answer within 0\.05s"
        ):
            server._receive(server._send({"name": "m", "cwd": "/"}, {}, []))
        assert server.waited >= 0.05
    finally:
        server.close()
        theirs.close()


def _health() -> tuple[Health, list[Any]]:
    """A Health over a manager with one module and a fork server."""
    handled: list[Any] = []
    manager = SimpleNamespace(
        config=SimpleNamespace(resources=SimpleNamespace(usage_log_interval=60.0)),
        children={"m": object()},
        forkserver=SimpleNamespace(waited=0.0),
        handle=lambda child, event: handled.append(event),
    )
    return Health(manager), handled  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("waited", "cause"),
    [
        (1.0, "1.0s of it waiting for the fork server's template, now replaced"),
        (0.0, "it was stopped, or one turn of its loop took that long"),
    ],
)
def test_a_stall_spent_on_the_template_says_so(
    waited: float, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    health, handled = _health()
    health._check_stall(100.0)
    health.manager.forkserver.waited = waited  # what a turn lost on a stuck template
    health._check_stall(101.2)  # 1.2 s in one turn, none of it in the poller
    assert f"the supervisor stalled for 1.2s ({cause})" in caplog.text
    assert len(handled) == 1  # still excused: the modules' messages waited unread
    assert health.manager.forkserver.waited == 0.0  # counted once


def test_a_template_wait_too_short_to_stall_the_loop_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health, handled = _health()
    health._check_stall(100.0)
    health.manager.forkserver.waited = 0.3
    with caplog.at_level(logging.WARNING):
        health._check_stall(100.4)
    assert "stalled" not in caplog.text and not handled
