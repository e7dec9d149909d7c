"""`orchestrator stop NAME`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, echo_json, expect, split_host, wait_option


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
    host, module = split_host(name)
    if host is not None:
        data = expect(app.remote(host, {"cmd": "stop", "name": module}, wait), host, name=str)
        if as_json:
            echo_json(app.remote(host, {"cmd": "status", "name": module}))
            return
        click.echo(f"{host}/{module} stopped ({data.get('why', '')}); `start {name}` starts it")
        return
    data = app.request("stop", wait=wait, name=name)
    if as_json:
        echo_json(app.request("status", name=name))
        return
    click.echo(f"{data['name']} stopped ({data['why']}); `orchestrator start {name}` starts it")
