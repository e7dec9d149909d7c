"""`orchestrator init [DIR]`: write a minimal, working project."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import click

from orchestrator.cli.common import abort
from orchestrator.scaffold.files import FileSet, WriteError
from orchestrator.scaffold.project import EXAMPLE_MODULE, project_files


@click.command()
@click.argument(
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    required=False,
)
@click.option("--force", is_flag=True, help="Overwrite files of the same names that exist.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print what was written as one JSON document."
)
def init(directory: Path, force: bool, as_json: bool) -> None:
    """Write a new project into DIR (default: the current directory).

    \b
    config/main.yaml     every setting, commented out, at its default
    config/modules.yaml  the module list, with one example module
    config/.env.example  how to pass secrets as ${VAR}s
    modules-backend/example/  a module with a passing test
    .gitignore           logs/ and .env

    Nothing is written if any of these files exists, unless --force is given.
    Then `orchestrator up -d` in DIR starts it.
    """
    root = Path(os.path.abspath(directory))
    if root.exists() and not root.is_dir():
        abort(f"{root}: not a directory")
    plan = FileSet()
    relative = {}
    for name, text in project_files().items():
        plan.add(root / name, text, replace=force)
        relative[root / name] = name
    existing = [path for path in relative if os.path.lexists(path)]
    if existing and not force:
        names = ", ".join(relative[path] for path in existing)
        abort(
            f"{root}: these files exist already: {names}; nothing was written (--force overwrites)"
        )
    try:
        plan.commit()
    except WriteError as exc:
        # New files are taken back on failure; a file --force replaced already cannot be.
        abort(f"could not write the project: {exc}" + ("" if force else "; nothing was written"))
    steps = _next_steps(directory)
    replaced = sorted(relative[path] for path in existing)
    if as_json:
        document = {
            "directory": str(root),
            "written": list(relative.values()),
            "replaced": replaced,
            "example_module": EXAMPLE_MODULE,
            "next": steps,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"created a project in {root}:")
    for name in relative.values():
        note = " (replaced)" if name in replaced else ""
        click.echo(f"  {name}{note}")
    click.echo("next:")
    width = max(len(step) for step in steps)
    for step in steps:
        click.echo(f"  {step.ljust(width)}  # {_WHY.get(step, '')}".rstrip(" #"))


_WHY = {
    "orchestrator up -d": f"start the supervisor and the {EXAMPLE_MODULE} module",
    "orchestrator status": "one row per module",
    "orchestrator test": "run each module's tests",
    "orchestrator down": "stop everything",
    "orchestrator new NAME --add": "write another module and add it to modules.yaml",
}


def _next_steps(directory: Path) -> list[str]:
    """The commands to run next; `cd` first unless DIR is the current directory."""
    steps = (
        []
        if Path(os.path.abspath(directory)) == Path.cwd()
        else [f"cd {shlex.quote(str(directory))}"]
    )
    return [*steps, *_WHY]
