"""`orchestrator status [NAME] [--json]`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from orchestrator import exit_codes
from orchestrator.cli.cluster_view import render_cluster
from orchestrator.cli.common import App, abort, config_option, split_host
from orchestrator.cli.formatting import duration

_COLUMNS = (
    "NAME",
    "STATE",
    "PID",
    "UPTIME",
    "RESTARTS",
    "LAST EXIT",
    "RSS",
    "CPU",
    "HEARTBEAT",
    "IN",
    "OUT",
    "NEXT RETRY",
)


@click.command()
@click.argument("name", required=False)
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
@click.option(
    "--cluster",
    is_flag=True,
    help="In cluster mode: every host (up, unreachable or left) and its modules, this host first.",
)
def status(app: App, name: str | None, as_json: bool, cluster: bool) -> None:
    """Show each module's state, pid, uptime, restarts, last exit, memory, CPU and event counts.

    With NAME, only that module, plus its settings (secrets shown as ***), its restart history and
    the last lines of its log. --json prints all of it, with the supervisor's pid, the bus
    endpoints and the process limit in use, as one JSON document. A log file that lost lines (a
    full disk) is named below the table, and under `logging` in the JSON: file, error, lines
    lost, since, and whether it is still failing or when it recovered. A reload that was
    rejected (a bad config) is a warning below the table, and `config.rejected` in the JSON, until
    a good config is applied. `webhooks` in the JSON counts each webhook's deliveries (delivered,
    failed, skipped while its breaker is open, dropped, queued) and its breaker's state;
    `metrics.url` where the metrics endpoint and status page listen (null when `metrics.listen`
    is not set).

    In cluster mode, HOST/NAME shows module NAME of cluster host HOST (exit 4 if HOST does not
    answer), and --cluster every host of the cluster with its modules.
    """
    if cluster:
        if name is not None:
            abort(
                "--cluster shows every host: give no NAME (or HOST/NAME without it)",
                exit_codes.USAGE,
            )
        view = app.request("cluster")
        click.echo(json.dumps(view, indent=2, sort_keys=True) if as_json else render_cluster(view))
        return
    host, module = split_host(name) if name is not None else (None, None)
    if host is not None:
        data = app.remote(host, {"cmd": "status", "name": module})
    else:
        data = app.request("status", name=name)
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(render(data))
    if name is not None:
        click.echo(render_details(data["modules"][0]))


def render(data: dict[str, Any], *, module_notes: bool = True) -> str:
    """The human-readable status: a summary line, one row per module, then notes (without the
    per-module ones if `module_notes` is false: `up -d` says those on stderr)."""
    sup, limits = data["supervisor"], data["limits"]
    lines = [
        f"supervisor pid {sup['pid']}, up {duration(sup['uptime'])}; "
        f"process limit {limits['max_processes']}, thread limit {limits['max_threads']}; "
        f"bus {data['bus']['xsub']} -> {data['bus']['xpub']}"
    ]
    lines += [_system_line(row) for row in data.get("system", []) if row["name"] != "broker"]
    rows: list[tuple[str, ...]] = [_COLUMNS]
    notes = []
    for module in data["modules"]:
        rows.append(_row(module))
        note = _note(module) if module_notes else ""
        if note:
            notes.append(f"  {module['name']}: {note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    notes += [_log_loss(entry) for entry in data.get("logging", [])]
    rejected = data.get("config", {}).get("rejected")
    if rejected:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(data["config"]["since"]))
        notes.append(
            f"warning: config change rejected since {since}, still running the previous config:"
            f" {rejected}; fix it, then save again (hot reload) or run `orchestrator reload`"
        )
    return "\n".join(lines + notes)


def _system_line(row: dict[str, Any]) -> str:
    """One line for a process of the supervisor's own (the cluster bridge)."""
    last = row["last_exit"]
    parts = [f"{row['name']} {row['state']}", f"pid {row['pid'] or '-'}"]
    if "host" in row:
        parts.append(f"host {row['host']}")
    if "nats" in row:
        parts.append(f"nats {row['nats']}")
    if "exported" in row:
        parts.append(f"events out {row['exported']}, in {row['imported']}")
        if row["unsent"]:
            parts.append(f"{row['unsent']} not sent (lost)")
    peers = row.get("peers")
    if peers is not None:
        parts.append(_peers(peers))
    parts.append(f"restarts {row['restarts']}")
    if last:
        parts.append(f"last exit {last['description']} ({last['reason']})")
    return ", ".join(parts)


def _peers(peers: dict[str, list[str]]) -> str:
    """`other hosts: 2 up, 1 unreachable (beta)` (see `status --cluster`)."""
    parts = [f"{len(peers['up'])} up"]
    if peers["unreachable"]:
        shown = ", ".join(peers["unreachable"][:5]) + (
            ", ..." if len(peers["unreachable"]) > 5 else ""
        )
        parts.append(f"{len(peers['unreachable'])} unreachable ({shown})")
    if peers["left"]:
        parts.append(f"{len(peers['left'])} left")
    return "other hosts: " + ", ".join(parts)


def render_details(module: dict[str, Any]) -> str:
    """Settings, history and log tail of one module, after its row."""
    supervision = module["supervision"]
    lines = [
        "",
        f"path:        {module['path']}",
        f"depends on:  {', '.join(module['depends_on']) or '-'}",
        "supervision: " + ", ".join(f"{key} {value}" for key, value in supervision.items()),
        f"config:      {json.dumps(module['config'], sort_keys=True)}",
    ]
    if module["env"]:
        lines.append(f"env:         {json.dumps(module['env'], sort_keys=True)}")
    lines.extend(_environment(module))
    if module["circuit_open"]:
        lines.append("circuit:     open (starts paused after repeated failed starts)")
    lines.append("history:" if module["history"] else "history:     no exits yet")
    for entry in module["history"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        error = f": {entry['error']}" if entry["error"] else ""
        lines.append(
            f"  {when}  pid {entry['pid']}  {entry['description']} ({entry['reason']}){error}"
        )
    lines.append(f"log ({module['log']}):")
    lines.extend(f"  {line}" for line in module["log_tail"])
    return "\n".join(lines)


def _environment(module: dict[str, Any]) -> list[str]:
    """The interpreter it runs on; with a venv of its own, what that was built from."""
    lines = [f"python:      {module.get('interpreter') or '-'}"]
    if module.get("venv"):
        state = module.get("dependencies") or "-"
        lines.append(f"venv:        {module['venv']} ({state}; from {module['venv_python']})")
        lines.append(f"requires:    {module['requirements']} (log {module['install_log']})")
        if module.get("install_error"):
            lines.append("install error (the installer's last lines):")
            lines.extend(f"  {line}" for line in module["install_error"])
    return lines


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
        f"{module['heartbeat_age']:.1f}s ago" if module["heartbeat_age"] is not None else "-",
        str(module["events_in"]),
        str(module["events_out"]),
        f"in {module['next_retry']:.1f}s" if module["next_retry"] is not None else "-",
    )


def _note(module: dict[str, Any]) -> str:
    parts = []
    if module["why"]:  # the supervisor's one line: why it is not running
        parts.append(module["why"])
    if module["dropped"]:
        parts.append(f"{module['dropped']} events dropped on the way in (fell behind the bus)")
    if parts:
        parts.append(f"log: {module['log']}")
    return "; ".join(parts)


def _log_loss(entry: dict[str, Any]) -> str:
    """One line for a log file that lost lines: a warning while it fails, then a note."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["since"]))
    lines = "line" if entry["lost"] == 1 else "lines"
    what = f"{entry['file']}: {entry['lost']} {lines} lost since {since} ({entry['error']})"
    if entry["failing"]:
        return f"warning: {what}; still failing, retrying"
    until = time.strftime("%H:%M:%S", time.localtime(entry["recovered"]))
    return f"note: {what}; writing again since {until}"
