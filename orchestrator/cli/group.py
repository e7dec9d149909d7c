"""The `orchestrator` click group; each command lives in a module of its own, imported when run."""

from __future__ import annotations

import importlib
from typing import Any

import click

from orchestrator import __version__
from orchestrator.cli.common import group_config_option

# Command name -> the module that defines it (its function is named as the command, with "_"
# for "-"), in the order `--help` lists them: lifecycle first. A command's module, and what it
# imports, loads only when that command runs (or `--help` lists them all).
COMMANDS = (
    "init",
    "up",
    "down",
    "status",
    "restart",
    "stop",
    "start",
    "scale",
    "run",
    "reload",
    "test",
    "logs",
    "events",
    "publish",
    "new",
    "systemd-unit",
)


class _Lazy(click.Group):
    """Lists `COMMANDS` in their order, and imports a command's module only when it is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, with the command meant by a mistyped one named (`stauts`: `status`?)."""
        if args and args[0] not in COMMANDS and not args[0].startswith("-"):
            import difflib  # noqa: PLC0415  (only for a mistyped command)

            close = difflib.get_close_matches(args[0], COMMANDS, n=1)
            if close:
                ctx.fail(f"No such command {args[0]!r}. Did you mean {close[0]!r}?")
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        attribute = cmd_name.replace("-", "_")
        module: Any = importlib.import_module(f"orchestrator.cli.{attribute}")
        command: click.Command = getattr(module, attribute)
        return command


@click.group(
    cls=_Lazy, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
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
