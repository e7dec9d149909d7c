"""`orchestrator init [DIR]`: write a minimal, working project."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import click

from orchestrator.cli.common import CONFIG_ENV, GroupOptions, abort, config_of
from orchestrator.scaffold.files import FileSet, WriteError
from orchestrator.scaffold.project import EXAMPLE_MODULE, GITIGNORE_FILE, project_files


@click.command()
@click.argument(
    "directory",
    metavar="[DIR]",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    required=False,
)
@click.option("--force", is_flag=True, help="Overwrite files of the same names that exist.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print what was written as one JSON document."
)
@click.pass_context
def init(ctx: click.Context, directory: Path, force: bool, as_json: bool) -> None:
    """Write a new project into DIR (default: the current directory).

    \b
    config/main.yaml          every setting, commented out, at its default
    config/modules.yaml       the module list, with one example module
    config/.env.example       how to pass secrets as ${VAR}s
    modules-backend/example/  a module with a passing test
    .gitignore                logs/ and .env

    Nothing is written if any of these files exists, unless --force is given; a .gitignore that
    exists gets the lines it lacks. Then `orchestrator up -d` in DIR starts the project.
    """
    given = ctx.find_object(GroupOptions)
    if given is not None and given.config_dir is not None:
        raise click.UsageError(
            "init writes a new project into DIR and takes no -c: `orchestrator init DIR`"
        )
    try:
        root = Path(os.path.abspath(directory))
    except FileNotFoundError:  # relative to a working directory that was removed
        abort(
            "the current directory no longer exists; cd elsewhere or give DIR as an absolute path"
        )
    if root.exists() and not root.is_dir():
        abort(f"{root}: not a directory")
    files = project_files()
    updated = _merge_gitignore(root, files)
    plan = FileSet()
    for name, text in files.items():
        plan.add(root / name, text, replace=force or name in updated)
    existing = [name for name in files if name not in updated and os.path.lexists(root / name)]
    if existing and not force:
        abort(
            f"{root}: these files exist already: {', '.join(existing)}; nothing was written "
            "(--force overwrites them)"
        )
    try:
        plan.commit()
    except WriteError as exc:
        # New files are taken back on failure; a file replaced already cannot be.
        nothing = "" if existing or updated else "; nothing was written"
        abort(f"could not write the project: {exc}{nothing}")
    steps = _next_steps(directory)
    _warn_of_config_env(root)
    if as_json:
        document = {
            "directory": str(root),
            "written": list(files),
            "replaced": existing,
            "updated": updated,
            "example_module": EXAMPLE_MODULE,
            "next": steps,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"created a project in {root}:")
    for name in files:
        note = " (replaced)" if name in existing else " (lines added)" if name in updated else ""
        click.echo(f"  {name}{note}")
    click.echo("next:")
    width = max(len(step) for step in steps)
    for step in steps:
        click.echo(f"  {step.ljust(width)}  # {_WHY.get(step, '')}".rstrip(" #"))


def _warn_of_config_env(root: Path) -> None:
    """One line on stderr if $ORCHESTRATOR_CONFIG names another config than the one written in
    `root`: the next steps (`up -d`, `new NAME --add`), run in `root`, would act on that one."""
    value = os.environ.get(CONFIG_ENV)
    if not value:  # unset or empty: click takes neither
        return
    theirs = config_of(Path(os.path.join(root, value)))  # a relative one: from `root`, as run
    ours = root / "config"
    if os.path.realpath(theirs) != os.path.realpath(ours):
        click.echo(
            f"warning: {CONFIG_ENV} is set to {value}: the next steps act on {theirs}, not on"
            f" this project; `unset {CONFIG_ENV}` first, or give them -c {ours}",
            err=True,
        )


def _merge_gitignore(root: Path, files: dict[str, str]) -> list[str]:
    """An existing .gitignore (a repository's own, say) gets the lines it lacks, not replaced and
    not in the way: `files` is changed to that. Returns [".gitignore"] if so, else []."""
    path = root / GITIGNORE_FILE
    if not path.is_file():
        return []
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        abort(f"{path}: cannot read it: {exc}; nothing was written")
    have = {line.strip() for line in current.splitlines()}
    missing = [line for line in files[GITIGNORE_FILE].splitlines() if line not in have]
    del files[GITIGNORE_FILE]
    if not missing:
        return []
    lead = current if current.endswith("\n") or not current else current + "\n"
    files[GITIGNORE_FILE] = lead + "\n".join(missing) + "\n"
    return [GITIGNORE_FILE]


_WHY = {
    "orchestrator up -d": f"start the supervisor and the {EXAMPLE_MODULE} module",
    "orchestrator status": "one row per module",
    "orchestrator test": "run each module's tests",
    "orchestrator down": "stop everything",
    "orchestrator new NAME --add": "write another module and add it to modules.yaml",
}


def _next_steps(directory: Path) -> list[str]:
    """The commands to run next; `cd` first unless DIR is the current directory."""
    try:
        here = Path(os.path.abspath(directory)) == Path.cwd()
    except FileNotFoundError:  # the working directory was removed: DIR is elsewhere
        here = False
    steps = [] if here else [f"cd {shlex.quote(str(directory))}"]
    return [*steps, *_WHY]
