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


HOLDS_A_CHILD = """
import subprocess
import sys

child = None


def initialize(event_bus, config):
    global child
    code = "import time; x = bytearray(80 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])


def shutdown():
    child.kill()
    child.wait()
"""


def test_a_modules_memory_counts_its_descendants(project: Project) -> None:
    """In a cgroup of its own, the module's processes are read from it; without one, from the
    process tree: either way, what its children hold counts."""
    path = project.write_module("holder.py", HOLDS_A_CHILD)
    project.configure([{"name": "holder", "path": path}])
    project.up()
    row = wait_until(
        lambda: (row := project.module("holder"))["rss_mb"] and row["rss_mb"] > 80 and row,
        15,
        "the child's 80 MB counted in the module's RSS",
        lambda: str(project.module("holder")),
    )
    assert row["rss_mb"] < 400, row  # its own, not the machine's
