"""What a NATS server says (peer-controlled: a rogue server, or anyone on a `nats://` path without
TLS) reaches `status`, app.log and the foreground console as text, its escape sequences shown,
never obeyed: an OSC 0 in its `-ERR` set the terminal's title through `orchestrator status`."""

from __future__ import annotations

import os
import sys
from typing import Any

import zmq

from orchestrator.cli.status import render
from orchestrator.helper_process import HelperProcess

TIMEOUT = 20.0  # seconds a step may take at most on a loaded machine (each ends sooner)
ROGUE = "rogue \x1b]0;nats-title\x07 \x1b[?1049h \u202e"
SHOWN = "rogue \\x1b]0;nats-title\\x07 \\x1b[?1049h \\u202e"


class Recording(HelperProcess):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[str] = []

    def on_line(self, line: str) -> None:
        self.lines.append(line)


def test_a_helpers_lines_and_exit_reason_are_kept_terminal_safe() -> None:
    handlers: dict[int, Any] = {}
    read_end, write_end = os.pipe()  # a lifeline that stays open
    helper = Recording(
        name="bridge",
        module="unused",
        args=[],
        memory_limit_mb=None,
        lifeline=read_end,
        poller=zmq.Poller(),
        watch_exit=lambda pid, handler: handler and handlers.__setitem__(pid, handler),
    )
    helper.argv = [
        sys.executable,
        "-c",
        "print('ready', flush=True)\n"
        f"print('nats: disconnected: ' + {ROGUE!r})\n"
        f"print('error: NATS closed the connection: ' + {ROGUE!r})\n"
        "raise SystemExit(1)\n",
    ]
    try:
        helper.start()
        helper.wait_ready(TIMEOUT)
        pid = helper.pid
        assert pid is not None
        _, raw = os.waitpid(pid, 0)  # the loop's reaper, in the supervisor
        handlers[pid](raw)
    finally:
        helper.stop(0.0)
        os.close(read_end)
        os.close(write_end)
    assert helper.lines == [f"nats: disconnected: {SHOWN}"]
    assert helper.last_exit is not None
    assert helper.last_exit["reason"] == f"NATS closed the connection: {SHOWN}"


def test_status_shows_a_reason_from_another_version_or_host_escaped() -> None:
    """`status` renders what the supervisor answers; a HOST/NAME answer comes from another host."""
    bridge = {
        "name": "bridge",
        "state": "backoff",
        "pid": None,
        "nats": f"disconnected: {ROGUE}",
        "restarts": 1,
        "last_exit": {"description": "exit 1", "reason": ROGUE},
    }
    module = {"name": "m", "state": "failed", "why": ROGUE, "last_exit": {"reason": ROGUE}}
    data = {"supervisor": {"pid": 7}, "system": [bridge], "modules": [module]}
    shown = render(data)
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert f"nats disconnected: {SHOWN}" in shown and f"last exit exit 1 ({SHOWN})" in shown
    assert f"m: {SHOWN}" in shown
