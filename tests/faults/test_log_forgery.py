"""What a module reports (an exception's text, a failed run's error) reaches app.log and `status`
as one printable line: a newline in it cannot forge a line of the supervisor's, nor an escape
sequence reach the operator's terminal."""

from __future__ import annotations

from helpers import wait_until
from project import Project

FORGER = """
def initialize(event_bus, config):
    raise RuntimeError(
        "boom\\n2026-12-07 00:00:00,000 CRITICAL [1] orchestrator.supervisor: FORGED\\x1b[2J"
        "\\x1b]0;TITLE\\x07"
    )


def shutdown():
    pass
"""


def test_a_module_error_with_newlines_stays_one_line(project: Project) -> None:
    project.configure(
        [{"name": "forger", "path": project.write_module("forger.py", FORGER), "max_restarts": 1}]
    )
    project.cli("up", "-d", check=1)
    app_log = project.root / "logs" / "app.log"
    wait_until(lambda: "FORGED" in app_log.read_text(), 10, "the error in app.log")
    for line in app_log.read_text().splitlines():
        assert not line.startswith("2026-12-07 00:00:00"), line  # no line of the module's own
        assert "\x1b" not in line, line
    status = project.cli("status", check=0).stdout
    assert "\x1b" not in status
    assert all("FORGED" not in line or "boom" in line for line in status.splitlines())
    # Its log (the traceback, as the module printed it) is shown by `status NAME`: escapes
    # shown, not obeyed (click strips CSI sequences when not on a terminal, but not OSC).
    details = project.cli("status", "forger", check=0).stdout
    assert "\x1b" not in details and "\x07" not in details and "\\x1b]0;TITLE" in details
