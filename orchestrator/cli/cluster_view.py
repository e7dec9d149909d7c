"""How `status --cluster` prints the cluster: a line per host, then a row per module."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.cli.formatting import duration

_COLUMNS = ("HOST", "MODULE", "STATE", "PID", "UPTIME", "RESTARTS")


def render_cluster(data: dict[str, Any]) -> str:
    """The human-readable view of `cluster` data, this host first."""
    hosts = data["hosts"]
    up = sum(1 for host in hosts if host["state"] == "up")
    lines = [f"cluster {data['cluster']}, seen from {data['host']}: {len(hosts)} hosts, {up} up"]
    if not data.get("connected"):
        lines.append(
            "warning: this host is not connected to NATS (see `status`): other hosts as last heard"
        )
    if data.get("twins"):
        lines.append(_twin_warning(data["host"]))
    for host in hosts:
        lines.append(_host_line(host))
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for host in hosts:
        for module in host["modules"]:
            rows.append(_module_row(host["host"], module))
    if len(rows) > 1:
        widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
        lines.append("")
        lines += [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
    return "\n".join(lines)


def _twin_warning(host: str) -> str:
    """Said while another host calls itself as this one (its rows and requests mix up)."""
    return (
        f"warning: another host also calls itself {host!r} (heard since this bridge started):"
        " give each host its own cluster.host"
    )


def _host_line(host: dict[str, Any]) -> str:
    state = host["state"]
    since = time.strftime("%H:%M:%S", time.localtime(host["since"])) if host["since"] else "?"
    parts = [f"{host['host']} {state}"]
    if host.get("this_host"):
        parts[0] += " (this host)"
    elif state == "up":
        parts.append(f"heard {host['last_heard']:.1f}s ago")
    else:
        parts.append(f"since {since}, last heard {host['last_heard']:.1f}s ago")
    parts.append(f"supervisor pid {host['pid'] or '-'}")
    if host["version"]:
        parts.append(f"version {host['version']}")
    running = sum(1 for module in host["modules"] if module["state"] == "running")
    parts.append(f"{running}/{len(host['modules'])} modules running")
    return ", ".join(parts)


def _module_row(host: str, module: dict[str, Any]) -> tuple[str, ...]:
    uptime = module["uptime"]
    return (
        host,
        str(module["name"]),
        str(module["state"]),
        str(module["pid"] or "-"),
        duration(uptime) if isinstance(uptime, int | float) else "-",
        str(module["restarts"] if module["restarts"] is not None else "-"),
    )
