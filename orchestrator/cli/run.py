"""`orchestrator run NAME`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, echo_json, wait_option


@click.command()
@click.argument("name")
@config_option
@wait_option("the run to end", default=300.0)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def run(app: App, name: str, wait: float, as_json: bool) -> None:
    """Run scheduled module NAME now, as if its schedule were due, and wait for the run to end.

    A module that exits when done is started and runs to its exit; one that defines run() has
    it called. While a run is in progress, `overlap:` decides: skip (exit 1), queue (the run is
    queued; exit 0 at once), allow. Exits 1 if the run fails, 2 if NAME has no schedule.
    """
    data = app.request("run", wait=wait, name=name)
    if as_json:
        echo_json(data)
        return
    if data.get("result") == "queued":
        click.echo(f"{name}: queued behind the run in progress ({data['queued']} queued)")
        return
    click.echo(f"{name}: run {data['run']} {data['result']}")
