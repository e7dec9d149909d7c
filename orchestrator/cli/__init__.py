"""The `orchestrator` command: thin click commands that parse, call the supervisor, and render."""

from __future__ import annotations

import click

from orchestrator import __version__
from orchestrator.cli.down import down
from orchestrator.cli.events import events
from orchestrator.cli.init import init
from orchestrator.cli.logs import logs
from orchestrator.cli.new import new
from orchestrator.cli.publish import publish
from orchestrator.cli.reload import reload
from orchestrator.cli.restart import restart
from orchestrator.cli.status import status
from orchestrator.cli.test import test
from orchestrator.cli.up import up


class _InOrder(click.Group):
    """Lists commands in the order they were added (lifecycle first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=_InOrder, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="orchestrator")
def cli() -> None:
    """Supervise Python modules that talk over a ZeroMQ event bus.

    Each enabled module in config/modules.yaml runs in its own process, restarted when it crashes,
    stopped gracefully with the rest. Every command takes -c/--config DIR (default ./config, or
    $ORCHESTRATOR_CONFIG) and talks to the supervisor running for that config.

    \b
    Exit codes: 0 done, 1 failed, 2 bad usage, 3 invalid config, 4 no supervisor running.
    """


for command in (init, up, down, status, restart, reload, test, logs, events, publish, new):
    cli.add_command(command)


def main() -> None:
    """Entry point of the `orchestrator` script."""
    cli()
