"""`orchestrator new NAME`: scaffold a module."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import click
import yaml

from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option
from orchestrator.config import ConfigError
from orchestrator.config.loader import MAIN_FILE, MODULES_FILE, read_yaml
from orchestrator.config.modules import NAME_PATTERN, RESERVED_NAMES, RESERVED_WHY
from orchestrator.config.validate import describe
from orchestrator.rundir import RunBaseError, RunDir
from orchestrator.scaffold.files import FileSet, WriteError
from orchestrator.scaffold.module import entry_text, module_entry, module_files
from orchestrator.scaffold.modules_file import CannotEditError, with_entry


@click.command()
@click.argument("name")
@config_option
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create it. Default: modules-backend/ beside the config directory.",
)
@click.option("--add", is_flag=True, help="Also append its entry to modules.yaml.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print what was written as one JSON document."
)
def new(app: App, name: str, directory: Path | None, add: bool, as_json: bool) -> None:
    """Create module NAME: a package with initialize/shutdown/get_tests and a passing test.

    Prints the modules.yaml entry to add, or appends it with --add. Either all of it is written or
    nothing is, so a failed try never gets in the way of the next.
    """
    if not NAME_PATTERN.fullmatch(name):
        abort(
            f"invalid module name {describe(name)}: up to 64 letters, digits, '_', '.' and '-', "
            "starting with a letter or digit",
            exit_codes.USAGE,
        )
    if name.lower() in RESERVED_NAMES:
        abort(f"invalid module name {describe(name)}: {RESERVED_WHY}", exit_codes.USAGE)
    app.require_config_dir()  # a module belongs to a project: never one beside nothing
    base = directory if directory is not None else app.config_dir.parent / "modules-backend"
    target = base / name
    if os.path.lexists(target):
        abort(f"{target} already exists")
    modules_file = app.config_dir / MODULES_FILE
    # Relative to where the loader resolves it from: the config directory's real path.
    relative = os.path.relpath(os.path.realpath(target), os.path.realpath(app.config_dir))
    entry = module_entry(name, relative)
    plan = FileSet()
    files: list[Path] = []
    for relative_path, text in module_files(name).items():
        files.append(target / relative_path)
        plan.add(target / relative_path, text)
    if add:
        # Through a symlink to the file it points at, which is what the loader reads.
        text = _modules_with(app, modules_file, entry)
        plan.add(Path(os.path.realpath(modules_file)), text, replace=True)
    try:
        plan.commit()
    except WriteError as exc:
        abort(f"could not write {name}: {exc}; nothing was written")
    steps = _next_steps(app, name, added=add)
    if as_json:
        document: dict[str, Any] = {
            "name": name,
            "written": [str(path) for path in files],
            "added_to": str(modules_file) if add else None,
            "entry": entry,
            "next": [step for step, _ in steps],
        }
        click.echo(json.dumps(document, indent=2))
        return
    for written in files:
        click.echo(f"created {written}")
    if add:
        click.echo(f"added {name} to {modules_file}\nnext:")
    else:
        click.echo(f"add it to {modules_file}:\n\n{entry_text(entry)}\nthen:")
    width = max(len(step) for step, _ in steps)
    for step, why in steps:
        click.echo(f"  {step.ljust(width)}  # {why}")


def _modules_with(app: App, modules_file: Path, entry: dict[str, Any]) -> str:
    """The text of modules.yaml with `entry` added (a new file if there is none); exits, having
    written nothing, if it cannot be read or edited."""
    by_hand = f"; add this entry by hand:\n{entry_text(entry)}"
    if not os.path.lexists(modules_file):
        return with_entry("", entry)
    try:
        data = read_yaml(modules_file, str(modules_file))
        text = modules_file.read_text(encoding="utf-8")
    except ConfigError as exc:
        abort(str(exc), exit_codes.BAD_CONFIG)
    listed = data.get("modules")
    if isinstance(listed, list) and any(
        isinstance(m, dict) and m.get("name") == entry["name"] for m in listed
    ):
        abort(f"{modules_file}: it has a module named {describe(entry['name'])} already")
    if not os.access(modules_file, os.W_OK):
        abort(f"{modules_file}: not writable{by_hand}")
    try:
        return with_entry(text, entry)
    except (CannotEditError, yaml.YAMLError) as exc:
        abort(f"{modules_file}: cannot add the entry ({exc}){by_hand}")


def _next_steps(app: App, name: str, *, added: bool) -> list[tuple[str, str]]:
    """What to run next, and why: test it, then have it started (a running supervisor with hot
    reload on starts it as soon as modules.yaml lists it)."""
    steps = [(_command(app, "test", name), "run its test")]
    try:
        running = RunDir(app.config_dir).running_pid() is not None
    except RunBaseError:  # a run directory path too long for a socket: nothing can run there
        running = False
    if not running:
        steps.append((_command(app, "up", "-d"), "start the supervisor and every enabled module"))
    elif _hot_reload(app.config_dir):
        where = "is starting it already" if added else "starts it once modules.yaml lists it"
        steps.append((_command(app, "status", name), f"the supervisor (hot reload on) {where}"))
    else:
        steps.append((_command(app, "reload"), "the running supervisor starts it"))
    return steps


def _hot_reload(config_dir: Path) -> bool:
    """Whether main.yaml turns hot reload on (as the running supervisor read it, unless it was
    edited since)."""
    try:
        main = read_yaml(config_dir / MAIN_FILE, MAIN_FILE, missing_ok=True)
    except ConfigError:
        return False
    return main.get("hot_reload") is True


def _command(app: App, *arguments: str) -> str:
    """`orchestrator ARGS`, with `-c DIR` unless that is the config directory a bare command run
    here would use."""
    default = Path(os.environ.get("ORCHESTRATOR_CONFIG") or "config")
    words = ["orchestrator", *arguments]
    if os.path.abspath(app.config_dir) != os.path.abspath(default):
        words += ["-c", str(app.config_dir)]
    return shlex.join(words)
