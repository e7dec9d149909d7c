"""The `orchestrator` command: thin click commands that parse, call the supervisor, and render."""

from __future__ import annotations

import click

from orchestrator import __version__
from orchestrator.cli.common import group_config_option
from orchestrator.cli.down import down
from orchestrator.cli.events import events
from orchestrator.cli.init import init
from orchestrator.cli.logs import logs
from orchestrator.cli.new import new
from orchestrator.cli.publish import publish
from orchestrator.cli.reload import reload
from orchestrator.cli.restart import restart
from orchestrator.cli.run import run
from orchestrator.cli.scale import scale
from orchestrator.cli.start import start
from orchestrator.cli.status import status
from orchestrator.cli.stop import stop
from orchestrator.cli.systemd_unit import systemd_unit
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
@group_config_option
def cli() -> None:
    """Supervise Python modules that talk over a ZeroMQ event bus.

    Each enabled module in config/modules.yaml runs in its own process, restarted when it crashes,
    stopped gracefully with the rest. Every command works on one config directory, -c/--config DIR
    before or after the command (default ./config, or $ORCHESTRATOR_CONFIG), and talks to the
    supervisor running for it. Commands that print a result take --json.

    \b
    Exit codes: 0 done, 1 failed, 2 bad usage (an unknown option, command or module name),
    3 config directory missing or config invalid, 4 no supervisor running (or a cluster host
    that does not answer).
    """


for command in (
    init,
    up,
    down,
    status,
    restart,
    stop,
    start,
    scale,
    run,
    reload,
    test,
    logs,
    events,
    publish,
    new,
    systemd_unit,
):
    cli.add_command(command)


def main() -> None:
    """Entry point of the `orchestrator` script."""
    cli()
