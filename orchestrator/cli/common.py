"""What every command shares: the -c/--config option, the app object, and one way to fail."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from orchestrator import exit_codes
from orchestrator.config import AppConfig, ConfigError, load_config
from orchestrator.control import ControlClient, ControlError, NotRunningError
from orchestrator.rundir import RunDir

F = TypeVar("F", bound=Callable[..., Any])


def abort(message: str, code: int = exit_codes.FAILED) -> NoReturn:
    """Print `Error: message` to stderr and exit with `code`."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


class App:
    """The config directory a command works on, and how to reach its supervisor."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir

    def load(self) -> AppConfig:
        """The validated config; exits with code 3 and a one-line error if it is invalid."""
        if not self.config_dir.is_dir():
            abort(f"{self.config_dir}: config directory not found", exit_codes.BAD_CONFIG)
        try:
            return load_config(self.config_dir)
        except ConfigError as exc:
            abort(str(exc), exit_codes.BAD_CONFIG)

    @cached_property
    def run_dir(self) -> RunDir:
        return RunDir(self.config_dir)

    def client(self) -> ControlClient:
        """A client for the running supervisor; exits with code 4 if none runs for this config."""
        try:
            return ControlClient(self.run_dir)
        except NotRunningError:
            abort(f"no supervisor is running for {self.config_dir}", exit_codes.NOT_RUNNING)

    def request(self, cmd: str, wait: float = 10.0, **arguments: Any) -> Any:
        """Send a request; exit 4 if no supervisor runs, 1 with its message if the request failed."""
        try:
            return self.client().request(cmd, wait, **arguments)
        except NotRunningError as exc:
            abort(str(exc), exit_codes.NOT_RUNNING)
        except ControlError as exc:
            abort(str(exc))


def config_option(command: F) -> F:
    """Add -c/--config DIR to a command and pass an `App` as its first argument."""

    def to_app(ctx: click.Context, param: click.Parameter, value: Path) -> App:
        return App(value)

    return click.option(
        "-c",
        "--config",
        "app",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("config"),
        envvar="ORCHESTRATOR_CONFIG",
        show_default="./config, or $ORCHESTRATOR_CONFIG",
        callback=to_app,
        help="Directory holding main.yaml and modules.yaml.",
    )(command)
