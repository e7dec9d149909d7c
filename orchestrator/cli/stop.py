"""`orchestrator stop NAME`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, module_request, wait_option


@click.command()
@click.argument("name")
@config_option
@wait_option("the module to stop")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the module's status once it stopped, as `status NAME --json` does.",
)
def stop(app: App, name: str, wait: float, as_json: bool) -> None:
    """Stop module NAME and keep it stopped until `start NAME`, `restart NAME` or the next `up`.

    The config is not changed, and a reload does not start it. Modules that depend on it follow
    as their `depends_on` says (by default they stop and wait for it). Returns once it stopped;
    exits 2 if there is no module NAME, 4 if no supervisor runs.

    In cluster mode, HOST/NAME stops module NAME on cluster host HOST, through that host's
    supervisor; exits 4 if HOST does not answer.
    """
    answer = module_request(app, "stop", name, wait, as_json)
    if answer is not None:
        label, data = answer
        why = data.get("why", "")
        if isinstance(data.get("instances"), list):  # a module with instances: every one
            why = ", ".join(str(i.get("name")) for i in data["instances"] if isinstance(i, dict))
        click.echo(f"{label} stopped ({why}); `orchestrator start {name}` starts it")
