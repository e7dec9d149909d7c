"""`orchestrator up [-d]`."""

from __future__ import annotations

import subprocess
import sys
import time

import click

from orchestrator import exit_codes
from orchestrator.boot import Boot
from orchestrator.cli.common import App, abort, config_option
from orchestrator.cli.status import render
from orchestrator.config import AppConfig
from orchestrator.control import ControlClient, ControlError, NotRunningError
from orchestrator.daemon import LaunchError, run_supervisor
from orchestrator.rundir import UnsafeRunDirError

_SUPERVISOR_START = 15.0  # how long a detached supervisor may take to take its lock


@click.command()
@config_option
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background; return once every module is running (exit 0), or say which "
    "failed (exit 1).",
)
def up(app: App, detach: bool) -> None:
    """Start the broker and every enabled module, each in its own process.

    In the foreground, module output shows on the console and Ctrl+C stops everything gracefully.
    Logs go to logs/app.log and logs/<module>.log either way.
    """
    if detach:
        raise SystemExit(_start_detached(app, app.load()))
    with Boot() as boot:  # the fork server's template boots while the config loads
        config = app.load()
        try:
            raise SystemExit(run_supervisor(config, app.run_dir, boot, foreground=True))
        except LaunchError as exc:
            abort(str(exc), exc.code)


def _start_detached(app: App, config: AppConfig) -> int:
    run_dir = app.run_dir
    pid = run_dir.running_pid()
    if pid is not None:
        abort(f"a supervisor is already running for this config (pid {pid})")
    try:
        run_dir.prepare()
    except UnsafeRunDirError as exc:
        abort(f"unsafe run directory: {exc}")
    output = run_dir.daemon_output
    with output.open("wb") as sink:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.daemon", str(app.config_dir)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + _SUPERVISOR_START
    while run_dir.running_pid() is None:
        if daemon.poll() is not None or time.monotonic() > deadline:
            detail = output.read_text(errors="replace").strip() if output.exists() else ""
            abort(f"the supervisor did not start{': ' + detail if detail else ''}")
        time.sleep(0.01)
    wait = max((m.supervision.start_timeout for m in config.enabled_modules), default=0.0) + 15.0
    try:
        data = ControlClient(run_dir).request("wait_started", wait)
    except (ControlError, NotRunningError) as exc:
        abort(str(exc))
    click.echo(render(data))
    failed = [m for m in data["modules"] if m["state"] != "running"]
    if failed:
        click.echo(
            "Error: not running: " + ", ".join(f"{m['name']} ({m['state']})" for m in failed),
            err=True,
        )
        return exit_codes.FAILED
    return exit_codes.OK
