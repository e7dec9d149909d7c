"""`orchestrator restart NAME`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, module_request, wait_option


@click.command()
@click.argument("name")
@config_option
@wait_option("the module to run again")
@click.option(
    "--graceful",
    is_flag=True,
    help="Start the new process first; stop the old one once the new one is ready.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the module's status once it runs again, as `status NAME --json` does.",
)
def restart(app: App, name: str, wait: float, graceful: bool, as_json: bool) -> None:
    """Restart module NAME and return once it is running again with a new pid.

    A module that has failed (restart limit reached) or was stopped (`stop NAME`) is started
    afresh. Exits 1 if it does not come back up, with the reason; 2 if there is no module NAME.

    With --graceful, a running module's new process starts beside the old one, which is stopped
    only once the new one is ready (both receive events for that moment); if the new one does
    not become ready, the old one keeps running and the command exits 1 saying why.

    In cluster mode, HOST/NAME restarts module NAME on cluster host HOST, through that host's
    supervisor; exits 4 if HOST does not answer.
    """
    answer = module_request(app, "restart", name, wait, as_json, graceful=graceful)
    if answer is None:
        return
    label, data = answer
    if data.get("graceful"):
        click.echo(
            f"{label} restarted gracefully (pid {data.get('pid')}, was {data.get('old_pid')})"
        )
    elif isinstance(data.get("instances"), list):  # a module with instances: each in turn
        done = ", ".join(f"{i.get('name')} (pid {i.get('pid')})" for i in data["instances"])
        click.echo(f"{label} restarted: {done}")
    elif data.get("done"):  # a job: it ran again and finished
        click.echo(f"{label} ran again and is done (exit 0)")
    else:
        click.echo(f"{label} restarted (pid {data.get('pid')})")
