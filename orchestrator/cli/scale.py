"""`orchestrator scale NAME N`."""

from __future__ import annotations

import click

from orchestrator.cli.common import App, config_option, echo_json, wait_option
from orchestrator.config.scheduling import MAX_INSTANCES


@click.command()
@click.argument("name")
@click.argument("count", type=click.IntRange(1, MAX_INSTANCES))
@config_option
@wait_option("the new instances to run and the extras to stop")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document.")
def scale(app: App, name: str, count: int, wait: float, as_json: bool) -> None:
    """Run COUNT instances of module NAME (it has `instances:` in modules.yaml).

    Starts NAME#k for each missing k, or stops the highest-numbered extras; the other instances
    keep their processes. Returns once the new ones run and the extras have stopped. The count
    lasts until the next `reload` or `up`, which go by modules.yaml. Exits 1 if an instance does
    not start (or waits, at the process limit), 2 if NAME has no `instances:`.
    """
    data = app.request("scale", wait=wait, name=name, count=count)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{data['name']}: {data['count']} instance(s): {', '.join(data['instances'])}")
