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
from orchestrator.config import ConfigError, load_config
from orchestrator.config.lenient import listed_modules, logs_directory
from orchestrator.config.model import INSTANCE_MARK
from orchestrator.control import ControlClient, ControlError, NotRunningError
from orchestrator.logtail import last_lines
from orchestrator.record import record
from orchestrator.regular_file import open_regular
from orchestrator.terminal import terminal_safe

_FOLLOW_POLL = 0.1  # seconds between looks at a followed file, as `tail -F` does
_ASK_WAIT = 5.0  # seconds the running supervisor has to say where its logs are


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

    Works whether or not the supervisor is running, and while the config on disk is invalid:
    the running supervisor says where its logs are (a `logging.directory` changed since `up`
    applies at the next `up`). In cluster mode, HOST/NAME shows the log of
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
    path = _log_file(app, name)
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


@record
class _Logs:
    """Where the logs are, and the names `logs` takes: the running supervisor's if one answers
    (its config may differ from the files: a `logging.directory` change waits for `up`), else
    the config's; a config that does not load is read leniently (`logs` is wanted then most)."""

    directory: Path
    files: dict[str, Path]  # NAME -> its log, as the supervisor names it
    modules: list[str]  # modules the config lists: NAME.log in `directory`, if it has run
    with_instances: set[str]  # of those, the ones that run as NAME#k


def _log_file(app: App, name: str) -> Path:
    """The log that NAME names; exits 2 for a name that is no module's, 3 for no config."""
    app.require_config_dir()
    logs = _from_supervisor(app) or _from_config(app)
    base, mark, _ = name.partition(INSTANCE_MARK)
    own = logs.directory / f"{name}.log"
    if name in logs.files:
        return logs.files[name]
    if name == "app" or (base in logs.with_instances if mark else name in logs.modules):
        return own
    if _exists(own):  # a module's log that its config no longer lists, say
        return own
    known = ", ".join(["app", *logs.files, *(m for m in logs.modules if m not in logs.files)])
    abort(f"no module named {name!r} (logs: {known})", exit_codes.USAGE)


def _from_supervisor(app: App) -> _Logs | None:
    """What the running supervisor says; None if none runs, or it does not answer (stalled):
    the files on disk are there all the same."""
    if app.run_dir.running_pid() is None:
        return None
    try:
        data = ControlClient(app.run_dir).request("status", _ASK_WAIT, sample=False)
        directory = Path(data["supervisor"]["logs"])
        files = {str(m["name"]): Path(m["log"]) for m in data["modules"]}
    except (ControlError, NotRunningError, KeyError, TypeError, ValueError):
        return None  # gone, stalled, or another version's answer
    listed = listed_modules(app.config_dir)  # not reloaded yet, or not enabled
    instances = {m.name for m in listed if m.instances}
    return _Logs(directory, files, [m.name for m in listed], instances)


def _from_config(app: App) -> _Logs:
    try:
        config = load_config(app.config_dir)
    except ConfigError:
        listed = listed_modules(app.config_dir)
        instances = {m.name for m in listed if m.instances}
        return _Logs(logs_directory(app.config_dir), {}, [m.name for m in listed], instances)
    instances = {m.name for m in config.modules if m.instances is not None}
    names = [m.name for m in config.modules]
    return _Logs(Path(config.logging.directory), {}, names, instances)


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system
        return False


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
