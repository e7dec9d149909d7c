"""`orchestrator logs NAME [-f] [-n N]`."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option, expect, split_host
from orchestrator.cli.stdout import reader_gone, stop_writing
from orchestrator.logtail import last_lines
from orchestrator.regular_file import open_regular
from orchestrator.terminal import terminal_safe

_FOLLOW_POLL = 0.1  # seconds between looks at a followed file, as `tail -F` does


@click.command()
@click.argument("name")
@config_option
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many of the last lines to show.",
)
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing new lines, across rotations, until Ctrl+C."
)
def logs(app: App, name: str, count: int, follow: bool) -> None:
    """Show the log of module NAME (its stdout, stderr and logging), or `app` for the supervisor's.

    Works whether or not the supervisor is running. In cluster mode, HOST/NAME shows the log of
    module NAME on cluster host HOST (or HOST/app, its supervisor's), through that host's
    supervisor (without --follow); exits 4 if HOST does not answer.
    """
    host, module = split_host(name)
    if host is not None:
        if follow:
            abort("--follow works for this host's logs only, not HOST/NAME", exit_codes.USAGE)
        data = app.remote(host, {"cmd": "logs", "name": module, "lines": count})
        for line in expect(data, host, lines=list)["lines"]:
            click.echo(_shown(str(line)))
        return
    config = app.load()
    if name != "app" and config.module(name.partition("#")[0]) is None:  # NAME#k: an instance
        known = ", ".join(["app", *(m.name for m in config.modules)])
        abort(f"no module named {name!r} (logs: {known})", exit_codes.USAGE)
    path = Path(config.logging.directory) / f"{name}.log"
    if not path.exists() and not follow:
        abort(f"{path}: no log yet (has {name} run?)")
    try:
        lines = last_lines(path, count)
    except OSError as exc:  # a FIFO or a device in its place, unreadable
        abort(f"{path}: cannot read it: {exc.strerror or exc}")
    for line in lines:
        click.echo(_shown(line))
    if follow:
        try:
            _follow(path)
        except KeyboardInterrupt:
            return
        stop_writing()  # it returns when stdout's reader went away


def _follow(path: Path) -> None:
    """Print what is appended to `path`, reopening it when it is rotated or truncated; returns
    when stdout's reader has gone (a write to it would only say so at the log's next line)."""
    handle = None
    identity: tuple[int, int] | None = None
    position = 0
    while True:
        try:
            stat = path.stat()
        except FileNotFoundError:
            if reader_gone():
                return
            time.sleep(_FOLLOW_POLL)
            continue
        if handle is None or (stat.st_dev, stat.st_ino) != identity or stat.st_size < position:
            if handle is not None:
                _print(handle.read())  # the rest of the rotated file
                handle.close()
            fresh = identity is not None or handle is not None
            try:
                handle = os.fdopen(open_regular(path, os.O_RDONLY), "rb")
            except OSError as exc:  # a FIFO or a device in its place
                abort(f"{path}: cannot read it: {exc.strerror or exc}")
            identity = (stat.st_dev, stat.st_ino)
            position = 0 if fresh else handle.seek(0, os.SEEK_END)
        chunk = handle.read()
        if chunk:
            position += len(chunk)
            _print(chunk)
        elif reader_gone():
            return
        else:
            time.sleep(_FOLLOW_POLL)


def _print(data: bytes) -> None:
    if data:
        sys.stdout.write(_shown(data.decode("utf-8", "replace")))
        sys.stdout.flush()


def _shown(text: str) -> str:
    """On a terminal, the module's escape sequences are shown, not obeyed; piped, the log goes
    through as it is."""
    return terminal_safe(text) if sys.stdout.isatty() else text
