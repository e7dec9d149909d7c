"""The fork server's template stopped (SIGSTOP, a debugger): the supervisor's loop must not wait
on it. It held the loop for the whole reply timeout (1 s), which the log then called a stall of
the supervisor's own; now a stopped template is seen before a request is sent, and replaced at
once (the module is spawned while the new one boots)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import psutil
import pytest
from helpers import wait_until

from orchestrator import forkserver
from orchestrator.forkserver import ForkServer, ForkServerBootingError, ForkServerError
from orchestrator.rundir import process_stopped


def test_a_stopped_template_is_replaced_without_the_loop_waiting_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(forkserver, "_REPLY_TIMEOUT", 10.0)  # a wait for it would show
    caplog.set_level(logging.WARNING, logger="orchestrator.forkserver")
    lifeline, keep = os.pipe()
    server = ForkServer(lifeline)
    env = {"PATH": os.environ["PATH"]}
    try:
        _, output = server.fork("a", env, Path("/"))  # the first template, booted
        output.read()
        output.close()
        stopped = server.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        wait_until(lambda: process_stopped(stopped), 10, "the template stopped")
        with pytest.raises(ForkServerBootingError):  # a new one boots: spawned meanwhile
            server.fork("b", env, Path("/"))
        assert f"its template (pid {stopped}) is stopped" in caplog.text, caplog.text
        assert server.waited == 0.0  # not a moment spent on the stopped one
        assert server.pid != stopped and not psutil.pid_exists(stopped)
        replacement = server.pid
        assert replacement is not None
        os.kill(replacement, signal.SIGSTOP)  # the same for forks asked together
        wait_until(lambda: process_stopped(replacement), 10, "the new template stopped")
        (result,) = server.fork_many([("c", env, Path("/"))])
        assert isinstance(result, ForkServerError) and server.waited == 0.0
        assert f"its template (pid {replacement}) is stopped" in caplog.text
    finally:
        server.close()
        os.close(lifeline)
        os.close(keep)


def test_a_template_stopped_before_it_booted_is_not_waited_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The broker's early fork waited for the template's boot for the whole boot timeout (30 s
    # of `up -d`) when the template had been stopped before it said ready.
    monkeypatch.setattr(forkserver, "_BOOT_TIMEOUT", 5.0)  # (the old wait ended as a timeout)
    monkeypatch.setattr(forkserver, "single_threaded", lambda: False)  # an interpreter's boot
    lifeline, keep = os.pipe()
    server = ForkServer(lifeline)
    try:
        server.start()
        template = server.pid
        assert template is not None
        os.kill(template, signal.SIGSTOP)  # long before its interpreter has booted
        pending = server.send_main("broker", [], {"PATH": os.environ["PATH"]}, Path("/"))
        with pytest.raises(ForkServerError, match=f"its template \\(pid {template}\\) is stopped"):
            server.receive(pending)
    finally:
        server.close()
        os.close(lifeline)
        os.close(keep)
