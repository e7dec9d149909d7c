"""The process limit holds modules back with a clear reason; logs rotate by size."""

from __future__ import annotations

from helpers import wait_until
from project import FAST_SUPERVISION, Project

from orchestrator import exit_codes

CHATTY = """
from typing import Any


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    for n in range(int(config["lines"])):
        print(f"line {n:04d} " + "x" * 60)
    print("chatty done", flush=True)


def shutdown() -> None:
    pass
"""


def test_modules_beyond_the_process_limit_wait_with_a_reason(project: Project) -> None:
    project.configure(
        [
            {"name": "first", "path": project.probe("idle")},
            {"name": "second", "path": project.probe("idle")},
        ],
        resources={"max_processes": 1},
    )
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert "second (waiting)" in result.stderr
    status = project.status()
    assert status["limits"]["max_processes"] == 1
    first, second = status["modules"]
    assert first["state"] == "running"
    assert second["state"] == "waiting" and second["pid"] is None
    assert "process limit reached (1 module processes)" in second["why"]
    assert "process limit reached" in project.cli("status", check=0).stdout
    project.cli("restart", "first", check=0)  # the freed slot goes back to the one restarting
    assert project.module("second")["state"] == "waiting"


def test_module_logs_rotate_by_size(project: Project) -> None:
    path = project.write_module("chatty.py", CHATTY)
    project.configure(
        [{"name": "chatty", "path": path, "config": {"lines": 300}}],
        logging={
            "level": "INFO",
            "directory": "logs",
            "max_file_size_mb": 0.002,
            "backup_count": 2,
        },
        supervision=FAST_SUPERVISION,
    )
    project.up()
    logs = project.root / "logs"
    wait_until(lambda: "chatty done" in project.log("chatty"), 10, "the last line in the log")
    assert (logs / "chatty.log.1").exists() and (logs / "chatty.log.2").exists()
    assert not (logs / "chatty.log.3").exists()
    assert (logs / "chatty.log").stat().st_size <= 2100
