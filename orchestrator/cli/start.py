"""`orchestrator start NAME`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, module_request, wait_option


@click.command()
@click.argument("name")
@config_option
@wait_option("the module to run")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the module's status once it runs, as `status NAME --json` does.",
)
def start(app: App, name: str, wait: float, as_json: bool) -> None:
    """Start module NAME again after `stop NAME` (or a failure); return once it is running.

    A running module is left as it is. Exits 1 if it does not come up (or waits for a
    dependency), with the reason; 2 if there is no module NAME, 4 if no supervisor runs.

    In cluster mode, HOST/NAME starts module NAME on cluster host HOST, through that host's
    supervisor; exits 4 if HOST does not answer.
    """
    answer = module_request(app, "start", name, wait, as_json)
    if answer is not None:
        label, data = answer
        if isinstance(data.get("instances"), list):  # a module with instances: every one
            each = [i for i in data["instances"] if isinstance(i, dict)]
            pids = ", ".join(f"{i.get('name')} pid {i.get('pid')}" for i in each)
            click.echo(f"{label} started ({pids})")
        elif data.get("done"):  # a job: it ran and finished before the answer
            click.echo(f"{label} ran and is done (exit 0)")
        else:
            verb = "is already running" if data.get("already") else "started"
            click.echo(f"{label} {verb} (pid {data.get('pid')})")
