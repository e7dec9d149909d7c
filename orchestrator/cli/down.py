"""`orchestrator down`."""

from __future__ import annotations

import time
from typing import Any

import click

from orchestrator.cli.common import App, Seconds, abort, config_option, echo_json
from orchestrator.control import ControlClient, NotRunningError, process_exists
from orchestrator.rundir import process_stopped

_EXIT_WAIT = 10.0


@click.command()
@config_option
@click.option(
    "--timeout",
    type=Seconds(min=0, max=86400),
    default=None,
    help="Seconds to wait for graceful stops before SIGKILL. Default: each module's stop_timeout.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"was_running": ..., "supervisor": {"pid": ...}} instead of a sentence.',
)
def down(app: App, timeout: float | None, as_json: bool) -> None:
    """Stop every module gracefully, then the supervisor; return when no process is left.

    Nothing running is not an error: it says so and exits 0, as `docker compose down` does.
    """
    app.require_config_dir()
    try:
        client = ControlClient(app.run_dir)
    except NotRunningError:
        app.abort_if_elsewhere()
        _done(as_json, None, f"nothing was running for {app.config_dir}", was_running=False)
        return
    if client.pid is not None and process_stopped(client.pid):  # it would wait 5 minutes
        abort(
            f"the supervisor (pid {client.pid}) is stopped (SIGSTOP?): `kill -CONT {client.pid}`"
            " resumes it, then `orchestrator down`"
        )
    wait = (timeout if timeout is not None else 300.0) + _EXIT_WAIT
    arguments = {} if timeout is None else {"timeout": timeout}
    data = app.request("down", wait=wait, **arguments)
    pid = _pid_of(data, client.pid)
    deadline = time.monotonic() + _EXIT_WAIT
    # Without a pid: until its lock is free (it drops it as it exits).
    while process_exists(pid) if pid is not None else app.run_dir.running_pid() is not None:
        if time.monotonic() > deadline:
            abort(f"modules stopped, but the supervisor (pid {pid or '?'}) did not exit")
        time.sleep(0.01)
    _done(as_json, pid, f"stopped (supervisor pid {pid or '?'})")


def _pid_of(data: Any, known: int | None) -> int | None:
    """The pid the supervisor's answer names, else the one its pid file gave (`known`); None if
    neither is a pid. Its answer comes after it has stopped every module: a reply of another
    shape (another version's) must not end `down` there."""
    pid = data.get("pid") if isinstance(data, dict) else None
    for candidate in (pid, known):
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
            return candidate
    return None


def _done(as_json: bool, pid: int | None, sentence: str, *, was_running: bool = True) -> None:
    if as_json:
        echo_json({"was_running": was_running, "supervisor": {"pid": pid}})
    else:
        click.echo(sentence)
