"""The CLI with its standard streams closed or unwritable, as scripts, cron and service
managers start it: what it was asked to do is done, and a failure to write is one line."""

from __future__ import annotations

import subprocess
import sys
import time

from project import Project, describe


def _with_shell(project: Project, redirect: str) -> None:
    """Run the next commands with `redirect` applied to the CLI (`0<&-` closes its stdin)."""
    project.command_prefix = ["sh", "-c", f'exec "$@" {redirect}', "sh"]


def test_up_with_its_standard_streams_closed_runs_every_module(project: Project) -> None:
    """With stdin closed, the lifeline pipe took descriptor 0, a helper's /dev/null replaced it,
    and the broker, seeing its lifeline end, exited and restarted for ever: every module down.
    With stdout closed, `up -d` failed on sys.stdout being None; with stderr closed, silently."""
    project.configure([{"name": "m", "path": project.probe("idle")}])
    for redirect in ("0<&-", "1>&-", "2>&-"):
        _with_shell(project, redirect)
        result = project.cli("up", "-d")
        project.command_prefix = []
        assert result.returncode == 0, f"{redirect}: {describe(result)}"
        status = project.status()
        assert status["bus"]["broker_restarts"] == 0, (redirect, status["bus"])
        assert [m["state"] for m in status["modules"]] == ["running"], redirect
        _with_shell(project, "1>&-")
        assert project.cli("logs", "m", "-n", "2").returncode == 0, redirect
        project.command_prefix = []
        project.cli("down", check=0)


def test_the_daemon_started_by_hand_with_stdout_closed_runs_every_module(
    project: Project,
) -> None:
    # `python -m orchestrator.daemon CONFIG >&-`: Boot's lifeline pipe took descriptor 1, and
    # the broker, forked with its output on 1, lost its lifeline and never came up.
    project.configure([{"name": "m", "path": project.probe("idle")}])
    command = [sys.executable, "-m", "orchestrator.daemon", str(project.config_dir)]
    daemon = subprocess.Popen(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command], env=project.env, cwd=project.root
    )
    try:
        status = project.wait_module("m", state="running")
        assert status["state"] == "running"
        assert project.status()["bus"]["broker_restarts"] == 0
    finally:
        project.cli("down", check=0)
        daemon.wait(timeout=30)


def test_output_to_a_full_disk_is_one_line_not_a_traceback(project: Project) -> None:
    project.configure([{"name": "m", "path": project.probe("idle")}])
    project.up()
    _with_shell(project, ">/dev/full")
    for command in (["status"], ["status", "--json"], ["logs", "m", "-n", "5"]):
        result = project.cli(*command)
        assert result.returncode == 1, describe(result)
        assert result.stderr == "Error: cannot write the output: No space left on device\n", (
            describe(result)
        )


def test_follow_commands_end_when_their_reader_goes_on_a_quiet_log_or_bus(
    project: Project,
) -> None:
    """`logs -f | grep -q x` after the match, `events | head -0`: on a quiet log or bus no write
    came to tell them, and they ran for ever (GNU tail -f ends at once)."""
    idle = project.probe("idle")
    project.configure(
        [{"name": "m", "path": idle}, {"name": "never", "path": idle, "enabled": False}]
    )
    project.up()
    for follow in ("logs m -f", "logs never -f", "events quiet.*"):  # never: no log file yet
        command = f"{sys.executable} -m orchestrator {follow} -c {project.config_dir} | head -0"
        # A hang is the failure: subprocess.run raises TimeoutExpired after 30 s.
        result = subprocess.run(
            ["sh", "-c", command],
            env=project.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert "Traceback" not in result.stderr, describe(result)


def test_events_to_a_full_disk_is_one_line_and_ends(project: Project) -> None:
    project.configure([{"name": "m", "path": project.probe("idle")}])
    project.up()
    command = [sys.executable, "-m", "orchestrator", "events", "--count", "3"]
    with open("/dev/full", "w") as full:
        events = subprocess.Popen(
            [*command, "-c", str(project.config_dir)],
            env=project.env,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30  # events to show, until it gives up writing
            while events.poll() is None and time.monotonic() < deadline:
                project.cli("publish", "test.ping", '"x"', check=0)
            assert events.wait(5) == 1
        finally:
            if events.poll() is None:
                events.kill()
                events.wait()
    assert events.stderr is not None
    lines = events.stderr.read().splitlines()
    assert lines[-1] == "Error: cannot write the output: No space left on device", lines


INTERRUPTED_IMPORT = """
import builtins, sys
real = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "orchestrator.cli.group":
        raise KeyboardInterrupt  # Ctrl+C while the command's imports run
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.argv = ["orchestrator", "status"]
from orchestrator.cli import main
main()
"""


def test_ctrl_c_during_the_imports_is_exit_130_without_a_traceback() -> None:
    """A SIGINT in a command's first ~0.3 s (one in four at random in a sweep) printed a
    KeyboardInterrupt traceback through zmq's or enum's imports."""
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 130 and result.stderr == "", describe(result)
