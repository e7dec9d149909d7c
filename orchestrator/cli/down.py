"""`orchestrator down`."""

from __future__ import annotations

import time

import click

from orchestrator.cli.common import App, abort, config_option
from orchestrator.control import process_exists

_EXIT_WAIT = 10.0


@click.command()
@config_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, max=86400),
    default=None,
    help="Seconds to wait for graceful stops before SIGKILL. Default: each module's stop_timeout.",
)
def down(app: App, timeout: float | None) -> None:
    """Stop every module gracefully, then the supervisor; return when no process is left."""
    wait = (timeout if timeout is not None else 300.0) + _EXIT_WAIT
    arguments = {} if timeout is None else {"timeout": timeout}
    data = app.request("down", wait=wait, **arguments)
    pid = int(data["pid"])
    deadline = time.monotonic() + _EXIT_WAIT
    while process_exists(pid):
        if time.monotonic() > deadline:
            abort(f"modules stopped, but the supervisor (pid {pid}) did not exit")
        time.sleep(0.01)
    click.echo(f"stopped (supervisor pid {pid})")
