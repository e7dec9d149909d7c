"""`orchestrator status [NAME] [--json]`."""

from __future__ import annotations

import json
from typing import Any

import click

from orchestrator.cli.common import App, config_option

_COLUMNS = ("NAME", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "RSS", "CPU", "IN", "OUT")


@click.command()
@click.argument("name", required=False)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def status(app: App, name: str | None, as_json: bool) -> None:
    """Show each module's state, pid, uptime, restarts, last exit, memory, CPU and event counts.

    With NAME, only that module. --json adds the supervisor's pid, the bus endpoints and the
    process limit in use.
    """
    data = app.request("status", name=name)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(render(data))


def render(data: dict[str, Any]) -> str:
    """The human-readable status: a summary line, one row per module, then notes."""
    sup, limits = data["supervisor"], data["limits"]
    lines = [
        f"supervisor pid {sup['pid']}, up {duration(sup['uptime'])}; "
        f"process limit {limits['max_processes']}, thread limit {limits['max_threads']}; "
        f"bus {data['bus']['xsub']} -> {data['bus']['xpub']}"
    ]
    rows: list[tuple[str, ...]] = [_COLUMNS]
    notes = []
    for module in data["modules"]:
        rows.append(_row(module))
        note = _note(module)
        if note:
            notes.append(f"  {module['name']}: {note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines + notes)


def _row(module: dict[str, Any]) -> tuple[str, ...]:
    last = module["last_exit"]
    rss, cpu = module["rss_mb"], module["cpu_percent"]
    return (
        module["name"],
        module["state"],
        str(module["pid"] or "-"),
        duration(module["uptime"]) if module["uptime"] is not None else "-",
        str(module["restarts"]),
        f"{last['description']} ({last['reason']})" if last else "-",
        f"{rss:.1f}M" if rss is not None else "-",
        f"{cpu:.0f}%" if cpu is not None else "-",
        str(module["events_in"]),
        str(module["events_out"]),
    )


def _note(module: dict[str, Any]) -> str:
    parts = []
    if module["state"] == "backoff" and module["next_retry"] is not None:
        parts.append(f"next retry in {module['next_retry']:.1f}s")
    if module["why"] and module["state"] != "running":
        parts.append(module["why"])
    last = module["last_exit"]
    if last and last["error"] and module["state"] != "running":
        parts.append(last["error"])
    if parts:
        parts.append(f"log: {module['log']}")
    return "; ".join(parts)


def duration(seconds: float) -> str:
    """`42s`, `5m03s`, `2h10m`, `3d04h`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
