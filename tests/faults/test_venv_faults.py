"""Module venvs under fire: a build that takes long (the loop keeps serving), a supervisor
SIGKILLed in the middle of one (no process left, no half venv taken for complete), and
requirements that are garbage or a pipe (that module fails, the others run)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from helpers import wait_until
from project import Project
from venv_kit import REPORTER, reported

from orchestrator.venv import READY_MARKER

pytestmark = pytest.mark.timeout(180)

# An interpreter that builds its venv, then lingers while `slow` exists: a build held open in
# the middle (its `.build-` directory made), for as long as the test needs.
SLOW_PYTHON = """#!/bin/sh
"{real}" "$@" || exit $?
while [ -e "{flag}" ]; do sleep 0.1; done
"""


def _slow_python(project: Project) -> tuple[Path, Path]:
    """An interpreter (`SLOW_PYTHON`) whose builds wait while the returned flag file exists."""
    flag = project.root / "slow"
    flag.touch()
    python = project.root / "slowpython"
    python.write_text(SLOW_PYTHON.format(real=os.path.realpath(sys.executable), flag=flag))
    python.chmod(0o755)
    return flag, python


def test_a_supervisor_killed_mid_build_leaves_nothing_that_passes_for_a_venv(
    project: Project,
) -> None:
    flag, python = _slow_python(project)
    reporter = project.write_module("reporter.py", REPORTER)
    project.probe("recorder")
    garbage = project.root / "modules" / "garbage"
    garbage.mkdir()
    (garbage / "__init__.py").write_text(REPORTER)
    (garbage / "requirements.txt").write_bytes(b"\xff\xfe\x00binary\x00")
    project.configure(
        [
            {
                "name": "recorder",
                "path": "../modules/recorder.py",
                "config": {"record": str(project.record_file)},
            },
            {"name": "slow", "path": reporter, "config": {"name": "slow"}, "python": str(python)},
            {"name": "garbage", "path": "../modules/garbage", "config": {"name": "garbage"}},
        ]
    )
    supervisor = project.start_foreground()
    # The build runs and the loop goes on: status answers, the others start or fail.
    row = project.wait_module("slow", 30, state="waiting", dependencies="installing")
    assert row["why"].startswith("installing dependencies"), row
    assert project.wait_module("recorder", 15, state="running")["pid"] is not None
    bad = project.wait_module("garbage", 15, state="failed")
    assert "dependencies did not install" in bad["why"] and "not UTF-8" in bad["why"], bad
    cache = project.root / ".orchestrator" / "venvs"
    wait_until(lambda: list(cache.glob(".build-*/bin/python")), 30, "the build's venv made")
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(10)
    wait_until(
        lambda: project.processes() == [],
        15,
        "no process of the project left",
        lambda: "\n".join(" ".join(p.cmdline()) for p in project.processes()),
    )
    # What the killed build left is not a venv anyone takes: no final directory, no marker.
    assert not [p for p in cache.iterdir() if not p.name.startswith(".") and p.is_dir()]
    assert not list(cache.rglob(READY_MARKER))
    flag.unlink()
    result = project.cli("up", "-d", timeout=120)
    assert result.returncode == 1, result.stderr  # garbage still fails; slow now runs
    assert project.module("slow")["state"] == "running"
    wait_until(lambda: reported(project, {"slow"}), 15, "slow reports", lambda: project.log("slow"))
    assert not list(cache.glob(".build-*")), list(cache.iterdir())  # the abandoned one removed
    assert len(list(cache.glob(f"*/{READY_MARKER}"))) == 1


def test_a_pipe_for_requirements_fails_its_module_and_down_stops_a_build(
    project: Project,
) -> None:
    package = project.root / "modules" / "piped"
    package.mkdir()
    (package / "__init__.py").write_text(REPORTER)
    os.mkfifo(package / "requirements.txt")  # read on the loop: no writer must block it
    escape = project.root / "modules" / "escape"  # a NUL in an included name raised on the loop
    escape.mkdir()
    (escape / "__init__.py").write_text(REPORTER)
    (escape / "requirements.txt").write_bytes(b"six\n-r ./inc\x00x.txt\n")
    _, python = _slow_python(project)  # held until `down`
    reporter = project.write_module("reporter.py", REPORTER)
    project.configure(
        [
            {"name": "piped", "path": "../modules/piped", "config": {"name": "piped"}},
            {"name": "idle", "path": project.probe("idle")},
            *(
                [{"name": "escape", "path": "../modules/escape", "user": "nobody"}]
                if os.geteuid() == 0
                else []
            ),
            {"name": "slow", "path": reporter, "config": {"name": "slow"}, "python": str(python)},
        ]
    )
    supervisor = project.start_foreground()
    row = project.wait_module("piped", 30, state="failed")
    assert "not a regular file" in row["why"], row
    assert row["dependencies"] == "failed" and row["interpreter"] is None
    assert any("not a regular file" in line for line in row["install_error"])
    project.wait_module("idle", 15, state="running")
    if os.geteuid() == 0:
        row = project.wait_module("escape", 15, state="failed")
        assert "a NUL character in the name of a file it includes" in row["why"], row
    project.wait_module("slow", 15, state="waiting", dependencies="installing")
    cache = project.root / ".orchestrator" / "venvs"
    wait_until(lambda: list(cache.glob(".build-*/bin/python")), 30, "the build's venv made")
    # `down` does not wait for a build: it stops it, and nothing of it is left running.
    project.cli("down", timeout=30, check=0)
    assert supervisor.wait(10) == 0
    wait_until(lambda: project.processes() == [], 10, "no process of the project left")
    assert not list(cache.rglob(READY_MARKER))


@pytest.mark.parametrize(
    ("sig", "named"),
    [(signal.SIGKILL, "SIGKILL"), (signal.SIGRTMIN + 6, f"signal {signal.SIGRTMIN + 6}")],
)
def test_a_killed_builder_takes_its_installer_along_and_says_it_was_killed(
    project: Project, sig: int, named: str
) -> None:
    """A real-time signal has no name in Python's `signal.Signals`: naming it raised in the
    exit handler, and the supervisor stopped with every module."""
    _, python = _slow_python(project)
    reporter = project.write_module("reporter.py", REPORTER)
    project.configure(
        [{"name": "slow", "path": reporter, "config": {"name": "slow"}, "python": str(python)}]
    )
    project.start_foreground()
    project.wait_module("slow", 30, state="waiting", dependencies="installing")
    cache = project.root / ".orchestrator" / "venvs"
    wait_until(lambda: list(cache.glob(".build-*/bin/python")), 30, "the build's venv made")

    def part(proc: psutil.Process, what: str) -> bool:
        with contextlib.suppress(psutil.Error):
            return what in " ".join(proc.cmdline())
        return False

    (builder,) = [p for p in project.processes() if part(p, "orchestrator.venv.build")]
    lingering = [p for p in project.processes() if part(p, str(python))]
    assert lingering, "the build's interpreter (slowpython) is not running"
    builder.send_signal(sig)
    row = project.wait_module("slow", 15, state="failed")
    assert f"the build was killed ({named})" in row["why"], row
    wait_until(
        lambda: not [p for p in lingering if p.is_running() and p.status() != "zombie"],
        10,
        "the installer gone with its builder",
    )
