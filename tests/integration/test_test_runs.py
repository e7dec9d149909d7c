"""`orchestrator test` leaves nothing running and says how the run ended, whatever the tests did
(kill pytest, its process group, start daemons, hang), and the `module_process` harness's
supervisor dies with the test process that started it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import wait_until
from project import Project, alive, describe

from orchestrator import exit_codes

_API = "def initialize(event_bus, config):\n    pass\n\n\ndef shutdown():\n    pass\n"

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

DAEMON_THEN_KILLPG = """
import os, signal, subprocess


def test_starts_a_daemon():
    daemon = subprocess.Popen(["sleep", "300"], start_new_session=True)
    with open({out!r}, "w") as out:
        out.write(str(daemon.pid))


def test_killpg():
    os.killpg(0, signal.SIGTERM)
"""

HANGS = """
import time


def test_hangs():
    open({out!r} + ".started", "w").write("started")
    try:
        time.sleep(600)
    finally:
        open({out!r}, "w").write("torn down")
"""


def _module(project: Project, name: str, test_source: str) -> str:
    root = project.root / "modules" / name
    (root / "tests").mkdir(parents=True)
    (root / "__init__.py").write_text(_API + '\n\ndef get_tests():\n    return ["tests"]\n')
    (root / "tests" / f"test_{name}.py").write_text(test_source)
    return f"../modules/{name}"


def test_a_killed_pytest_takes_the_harness_supervisor_with_it_and_is_named(
    project: Project,
) -> None:
    """The harness's supervisor, broker and module ran on, reparented to init, after a test
    killed pytest (a CI timeout, the OOM killer); the command said only "pytest did not run"."""
    out = project.root / "started.json"
    idle = str((project.root / "modules" / "idle.py").resolve())
    project.probe("idle")
    source = HARNESS_THEN_KILLED.format(out=str(out), idle=idle, signal="SIGKILL")
    project.configure([{"name": "killer", "path": _module(project, "killer", source)}])
    result = project.cli("test", check=exit_codes.FAILED)
    assert "pytest was killed by SIGKILL before it wrote its report" in result.stderr, describe(
        result
    )
    started = json.loads(out.read_text())
    assert [pid for pid in started["pids"] if alive(pid)] == [], describe(result)
    assert not Path(started["root"]).exists()


def test_killpg_and_a_daemon_in_tests_neither_end_the_command_nor_outlive_it(
    project: Project,
) -> None:
    """pytest shared the CLI's process group: a test's killpg(0) killed the command with no
    report (exit 143); a process a test started in its own session ran on after it returned."""
    out = project.root / "daemon.pid"
    source = DAEMON_THEN_KILLPG.format(out=str(out))
    project.configure([{"name": "wild", "path": _module(project, "wild", source)}])
    # In a process group of its own: were the fix gone, killpg(0) would end this test's runner.
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "test", "-c", str(project.config_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=project.env,
        cwd=project.root,
        process_group=0,
        check=False,
    )
    assert result.returncode == exit_codes.FAILED, describe(result)
    assert "pytest was killed by SIGTERM before it wrote its report" in result.stderr, describe(
        result
    )
    assert "killed 1 process(es) the tests left running" in result.stderr
    assert not alive(int(out.read_text()))


def test_a_hanging_test_is_interrupted_by_the_timeout_and_its_teardown_runs(
    project: Project,
) -> None:
    out = project.root / "torn-down"
    project.configure(
        [{"name": "slow", "path": _module(project, "slow", HANGS.format(out=str(out)))}]
    )
    result = project.cli("test", "--timeout", "2", "--json", check=exit_codes.FAILED)
    assert "the run took over --timeout 2s" in result.stderr, describe(result)
    # On a loaded machine the timeout may come while pytest still starts: no test, no report.
    if Path(f"{out}.started").exists():
        report = json.loads(result.stdout)
        assert report["timed_out"] == 2 and report["passed"] is False, describe(result)
        assert out.read_text() == "torn down", describe(result)


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
