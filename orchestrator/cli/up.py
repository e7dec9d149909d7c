"""`orchestrator up [-d]`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, BinaryIO

import click

from orchestrator import exit_codes
from orchestrator.boot import Boot
from orchestrator.cli import catches_detached
from orchestrator.cli.common import App, abort, config_option, raising_on_stop_signals
from orchestrator.cli.status import log_hint, render
from orchestrator.cli.up_checks import check_in_a_fork, report_previous
from orchestrator.config import AppConfig
from orchestrator.control import ControlClient, ControlError, NotRunningError
from orchestrator.daemon import Daemon, LaunchError, detach, run_supervisor
from orchestrator.fd_budget import files_short
from orchestrator.rundir import UnsafeRunDirError, open_run_file

_SUPERVISOR_START = 15.0  # how long a detached supervisor may take to take its lock


@click.command()
@config_option
@click.option(
    "-d",
    "--detach",
    is_flag=True,
    help="Run in the background; return once every module is running (exit 0), or say which "
    "are not and why (exit 1).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="With -d: print what `status --json` prints once started, instead of the table.",
)
def up(app: App, detach: bool, as_json: bool) -> None:
    """Start the broker and every enabled module, each in its own process.

    In the foreground, module output shows on the console and Ctrl+C stops everything gracefully.
    Logs go to logs/app.log and logs/<module>.log either way. If the previous supervisor of this
    config stopped without `down` (killed, out of memory), a warning says so first.
    """
    if as_json and not detach:
        raise click.UsageError("--json needs -d (in the foreground, up prints module output)")
    _refuse_undecodable(app)
    if detach:
        raise SystemExit(_start_detached(app, as_json=as_json))
    with Boot() as boot:  # the fork server's template boots while the config loads
        config = app.load()
        report_previous(app, config)
        try:
            raise SystemExit(run_supervisor(config, app.run_dir, boot, foreground=True))
        except LaunchError as exc:
            abort(str(exc), exc.code)


class _Signalled(BaseException):  # as KeyboardInterrupt: no `except Exception` takes it
    """SIGTERM or SIGHUP while `up -d` waits for its supervisor (Ctrl+C: KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _refuse_undecodable(app: App) -> None:
    """Exit 3 if the project's path is not UTF-8: the endpoints and the messages between the
    supervisor and its modules carry paths as UTF-8 text (it failed at the first spawn)."""
    real = app.config_dir.resolve()  # module paths are resolved: a symlink would not do
    try:
        str(real).encode()
    except UnicodeEncodeError:
        shown = os.fsencode(real).decode(errors="backslashreplace")
        abort(
            f"{shown}: the project's path is not valid UTF-8; rename the directory",
            exit_codes.BAD_CONFIG,
        )


def _start_detached(app: App, *, as_json: bool) -> int:
    """Fork the supervisor, then wait for its modules. The config is checked in a fork of its
    own first (`check_in_a_fork`): this process, which becomes the supervisor, and the
    supervisor's fork server template, whose memory every module inherits, never hold its
    secrets; the supervisor reads it after it has forked the template."""
    app.require_config_dir()
    run_dir = app.run_dir
    pid = run_dir.running_pid()
    if pid is not None:
        app.load()  # a broken config is said first, as `up` says it (no fork follows here)
        abort(f"a supervisor is already running for {app.config_dir} (pid {pid})")
    # Says the config's error (exit 3) or a previous supervisor's death; how long to wait.
    wait = check_in_a_fork(app, _start_wait)
    try:
        run_dir.prepare()
        # Read through our own handle: a supervisor that fails removes its run directory, and
        # this file with it, before it exits.
        sink = os.fdopen(open_run_file(run_dir.daemon_output, os.O_WRONLY | os.O_TRUNC), "wb")
        output = os.fdopen(open_run_file(run_dir.daemon_output, os.O_RDONLY), "rb")
    except UnsafeRunDirError as exc:
        abort(f"unsafe run directory: {exc}")
    except OSError as exc:  # a read-only or full file system, say
        abort(f"cannot prepare the run directory {run_dir.path}: {exc.strerror or exc}")
    with sink, output:
        daemon = detach(app.config_dir, run_dir, sink, close=(output,), leave=catches_detached())
        try:
            # The supervisor, in a session of its own, does not get these and starts on: said.
            with raising_on_stop_signals(_Signalled):
                data = _wait_started(app, daemon, output, wait)
        except (KeyboardInterrupt, _Signalled) as exc:
            code = 128 + (exc.signum if isinstance(exc, _Signalled) else signal.SIGINT)
            if daemon.poll() is not None:
                abort("interrupted", code)
            abort(
                f"interrupted; the supervisor (pid {daemon.pid}) keeps starting in the background:"
                " see `orchestrator status`, or stop it with `orchestrator down`",
                code,
            )
    click.echo(
        json.dumps(data, indent=2, sort_keys=True) if as_json else render(data, module_notes=False)
    )
    failed = [m for m in data["modules"] if not _fine(m)]
    short = files_short(data.get("limits") or {}, len(data["modules"]))
    if short and any(m["state"] == "waiting" for m in failed):
        click.echo(f"warning: {short}", err=True)
    if failed:
        lines = [f"Error: not running: {', '.join(m['name'] for m in failed)}"]
        lines += [f"  {m['name']} ({m['state']}): {m['why']}; {log_hint(m)}" for m in failed]
        click.echo("\n".join(lines), err=True)
        return exit_codes.FAILED
    return exit_codes.OK


def _wait_started(app: App, daemon: Daemon, output: BinaryIO, wait: float) -> Any:
    """Wait for the new supervisor to take its lock, then up to `wait` seconds for every module
    to start; aborts with the supervisor's own error if it exits first."""
    deadline = time.monotonic() + _SUPERVISOR_START
    while (pid := app.run_dir.running_pid()) != daemon.pid:
        if daemon.poll() is not None or time.monotonic() > deadline:
            if pid is not None and pid > 0:  # another `up` started at the same moment won
                abort(f"a supervisor is already running for {app.config_dir} (pid {pid})")
            said = _said(output) or _full(app.run_dir.path)
            abort(f"the supervisor did not start{said}", _code_of(daemon))
        time.sleep(0.01)
    try:
        return ControlClient(app.run_dir).request("wait_started", wait)
    except (ControlError, NotRunningError) as exc:
        daemon.wait(1.0)  # it may be on its way out, with its reason in its output
        said = _said(output) if daemon.poll() is not None else ""
        if not said and isinstance(exc, ControlError) and _data_kind(exc) == "timeout":
            _still_installing(app, wait)
        abort(f"the supervisor did not start{said}" if said else str(exc), _code_of(daemon))


def _start_wait(config: AppConfig) -> float:
    """How long `config`'s modules may take to start."""
    wait = max((m.supervision.start_timeout for m in config.enabled_modules), default=0.0) + 15.0
    return wait + install_wait(config)  # modules wait for their venvs to be built first


def install_wait(config: AppConfig) -> float:
    """How long the venv builds of `config`'s modules may take by their own limits: each build
    step may take `BUILD_TIMEOUT` (the install; the quick steps get a minute), at most
    `MAX_BUILDS` builds at once."""
    own = sum(1 for m in config.enabled_modules if m.own_environment)
    if not own:
        return 0.0
    from orchestrator.venv.environments import BUILD_TIMEOUT, MAX_BUILDS  # noqa: PLC0415

    return -(-own // MAX_BUILDS) * (BUILD_TIMEOUT + 60.0)


def _data_kind(exc: ControlError) -> object:
    return exc.data.get("kind") if isinstance(exc.data, dict) else None


def _still_installing(app: App, waited: float) -> None:
    """`up -d` gave up while the supervisor still answers: if modules are still waiting for
    their venvs, say so (exit 1), rather than that the supervisor did not answer."""
    try:
        modules = ControlClient(app.run_dir).request("status", 10.0)["modules"]
    except (ControlError, NotRunningError, KeyError, TypeError):
        return
    building = [m["name"] for m in modules if m.get("dependencies") in ("queued", "installing")]
    if building:
        abort(
            f"{', '.join(building)}: still installing dependencies after {waited / 60:.0f} min; "
            "the supervisor keeps running (orchestrator status, orchestrator down)"
        )


def _code_of(daemon: Daemon) -> int:
    """Our exit code for a supervisor that did not start: 3 if its config was the reason (it
    may fail that way even after taking its lock), else 1."""
    bad_config = daemon.poll() == exit_codes.BAD_CONFIG
    return exit_codes.BAD_CONFIG if bad_config else exit_codes.FAILED


def _said(output: BinaryIO) -> str:
    """What the daemon wrote before it exited (its one-line error), as ": <it>", or ""."""
    output.seek(0)
    detail = output.read().decode(errors="replace").strip()
    return f": {detail.removeprefix('Error: ')}" if detail else ""


def _full(directory: Path) -> str:
    """ ": <why>" if `directory`'s file system has no space or inode left (the supervisor's own
    error could not be written there either), else ""."""
    try:
        fs = os.statvfs(directory)
    except OSError:
        return ""
    if fs.f_bavail == 0 or (fs.f_files and fs.f_favail == 0):
        return f": the file system of its run directory {directory} is full"
    return ""


def _fine(module: dict[str, Any]) -> bool:
    """Running; or done (it exited 0 with `restart: never`); or scheduled and not failed (it
    runs at its times)."""
    state = module["state"]
    if state in ("running", "done"):
        return True
    return bool(module.get("schedule")) and state in ("stopped", "starting", "waiting")
