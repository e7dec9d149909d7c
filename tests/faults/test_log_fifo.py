"""A FIFO put where a module's log file was (by the module itself, say) never holds the
supervisor: opening it would block until someone read it. The log's lines are counted as lost
(and written again once a file is back), `status` keeps answering, and `logs` says why it cannot
read it in one line. A symbolic link in its place is never followed: a supervisor running as
root would append the module's output to whatever file it names."""

from __future__ import annotations

import os

from helpers import wait_until
from project import Project

CHATTY = """
import threading, time


def _talk():
    while True:
        print("tick", flush=True)
        time.sleep(0.05)


def initialize(event_bus, config):
    threading.Thread(target=_talk, daemon=True).start()


def shutdown():
    pass
"""


def test_a_fifo_in_place_of_a_log_file_costs_lines_not_the_supervisor(project: Project) -> None:
    project.configure([{"name": "chatty", "path": project.write_module("chatty.py", CHATTY)}])
    project.up()
    log = project.root / "logs" / "chatty.log"
    wait_until(lambda: "tick" in project.log("chatty"), 10, "the module's first lines")
    log.unlink()  # the supervisor notices a new file at the path within a second, and opens it
    os.mkfifo(log)
    wait_until(
        lambda: "lines lost" in project.cli("status", check=0).stdout, 15, "the loss in status"
    )
    result = project.cli("logs", "chatty", "-n", "3", check=1)
    assert result.stderr.strip() == f"Error: {log}: cannot read it: not a regular file"
    log.unlink()  # a file again: writing resumes, with a line saying how many were lost
    wait_until(lambda: log.is_file() and "lost" in log.read_text(), 15, "writing again")
    project.cli("down", check=0)
    assert project.processes() == []


def test_a_link_in_place_of_a_log_file_is_never_followed(project: Project) -> None:
    project.configure([{"name": "chatty", "path": project.write_module("chatty.py", CHATTY)}])
    elsewhere = project.root / "elsewhere.txt"
    elsewhere.write_text("precious\n")
    project.up()
    log = project.root / "logs" / "chatty.log"
    wait_until(lambda: "tick" in project.log("chatty"), 10, "the module's first lines")
    log.unlink()
    log.symlink_to(elsewhere)
    wait_until(
        lambda: "lines lost" in project.cli("status", check=0).stdout, 15, "the loss in status"
    )
    assert "symbolic link" in project.cli("status", "chatty", check=0).stdout
    result = project.cli("logs", "chatty", "-n", "3", check=1)
    assert result.stderr.strip() == f"Error: {log}: cannot read it: a symbolic link, not followed"
    assert elsewhere.read_text() == "precious\n"
    log.unlink()
    wait_until(lambda: log.is_file() and "lost" in log.read_text(), 15, "writing again")
    assert elsewhere.read_text() == "precious\n"
    project.cli("down", check=0)
    assert project.processes() == []


def test_a_link_in_place_of_app_log_is_a_config_error(project: Project) -> None:
    project.configure([])
    (project.root / "logs").mkdir(exist_ok=True)
    (project.root / "logs" / "app.log").symlink_to(project.root / "elsewhere.txt")
    result = project.cli("up", "-d", check=3)
    assert "logging.directory" in result.stderr
    assert "app.log is a symbolic link, not followed" in result.stderr
    assert not (project.root / "elsewhere.txt").exists()
