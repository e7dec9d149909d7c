"""The `orchestrator` command: thin click commands that parse, call the supervisor, and render.

This package imports nothing at all: `orchestrator --version` answers without click, and a
command imports its own module (and what that needs) only when it runs (`group.py`).
"""

from __future__ import annotations

import atexit
import gc
import sys

from orchestrator import __version__

TYPE_CHECKING = False  # as typing's: typing itself (15-20 ms) waits for a command that needs it
if TYPE_CHECKING:
    from typing import Any


def main() -> None:
    """Entry point of the `orchestrator` script."""
    if sys.argv[1:] == ["--version"]:  # as click's version option prints it, without click
        print(f"orchestrator, version {__version__}")
        return
    # A command's objects die with its process: the interpreter's own collections at exit,
    # which walk every object the imports made, would only add 20-40 ms to each command.
    atexit.register(gc.freeze)  # registered first, so it runs last
    from orchestrator.cli.group import cli  # noqa: PLC0415

    cli()


def __getattr__(name: str) -> Any:
    """`from orchestrator.cli import cli`: the click group, imported on first use."""
    if name == "cli":
        from orchestrator.cli.group import cli  # noqa: PLC0415

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
