"""The `module_process` harness's supervisor dies with the test process that started it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import wait_until
from project import Project, alive, describe

# A test that starts the project's idle module under the harness, writes the pids of everything
# it started (and its scratch directory), then kills its own pytest before any teardown.
HARNESS_THEN_KILLED = """
import json, os, signal, subprocess, sys

OUT = {out!r}


def test_harness_then_killed(module_process):
    running = module_process({idle!r})
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "--json", "-c", str(running.config_dir)],
        env=running.env, capture_output=True, text=True, check=True,
    )
    shown = json.loads(status.stdout)
    pids = [shown["supervisor"]["pid"], *(m["pid"] for m in shown["modules"])]
    with open(OUT, "w") as out:
        json.dump({{"pids": pids, "root": str(running.root)}}, out)
    os.kill(os.getpid(), signal.{signal})
"""


def test_the_harness_supervisor_dies_with_a_pytest_run_directly(project: Project) -> None:
    """Not under `orchestrator test`: pytest killed (SIGKILL) before its teardown left the
    harness's supervisor running for good."""
    out = project.root / "started.json"
    project.probe("idle")
    idle = str((project.root / "modules" / "idle.py").resolve())
    test_file = project.root / "test_direct.py"
    test_file.write_text(HARNESS_THEN_KILLED.format(out=str(out), idle=idle, signal="SIGKILL"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=project.root,
        env=project.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == -9, describe(run)
    started = json.loads(out.read_text())
    wait_until(
        lambda: not any(alive(pid) for pid in started["pids"]),
        20,
        "the harness's supervisor and module gone with pytest",
    )
    wait_until(lambda: not Path(started["root"]).exists(), 10, "its scratch directory removed")
