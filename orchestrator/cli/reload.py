"""`orchestrator reload [--dry-run]`."""

from __future__ import annotations

from typing import Any

import click

from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option, echo_json
from orchestrator.control import ControlError, NotRunningError


@click.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Print what would change, and change nothing.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the plan as one JSON document: start, stop, restart (name: changed fields), "
    "unchanged, not_applied, dry_run.",
)
def reload(app: App, dry_run: bool, as_json: bool) -> None:
    """Re-read main.yaml and modules.yaml and apply only the difference.

    Modules added or newly enabled start, removed or disabled ones stop, those whose settings
    changed restart, and the rest keep running untouched. An invalid config changes nothing: the
    error is printed (exit 3) and the running config stays. SIGHUP to the supervisor does the same.
    """
    try:
        plan = app.client().request("reload", 30.0, dry_run=dry_run)
    except NotRunningError as exc:
        abort(str(exc), exit_codes.NOT_RUNNING)
    except ControlError as exc:
        is_config = isinstance(exc.data, dict) and exc.data.get("kind") == "config"
        suffix = "; the running config is unchanged" if is_config else ""
        abort(f"{exc}{suffix}", exit_codes.BAD_CONFIG if is_config else exit_codes.FAILED)
    if as_json:
        echo_json({**plan, "dry_run": dry_run})
        return
    click.echo(render_plan(plan, dry_run=dry_run))


def render_plan(plan: dict[str, Any], *, dry_run: bool) -> str:
    """One line per kind of change."""
    verb = "would" if dry_run else "will"
    if not (plan["start"] or plan["stop"] or plan["restart"]):
        lines = ["no module changes"]
    else:
        lines = []
        if plan["start"]:
            lines.append(f"start:     {', '.join(plan['start'])}")
        if plan["stop"]:
            lines.append(f"stop:      {', '.join(plan['stop'])}")
        for name, fields in plan["restart"].items():
            lines.append(f"restart:   {name} ({', '.join(fields)} changed)")
    if plan["unchanged"]:
        lines.append(f"unchanged: {', '.join(plan['unchanged'])}")
    for section in plan["not_applied"]:
        lines.append(f"note: {section} changed; it {verb} apply only at the next `up`")
    if dry_run:
        lines.append("(dry run: nothing was changed)")
    return "\n".join(lines)
