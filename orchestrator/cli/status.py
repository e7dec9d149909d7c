"""`orchestrator status [NAME] [--json]`."""

from __future__ import annotations

import json
import time
from typing import Any, TypeGuard

import click

from orchestrator import exit_codes
from orchestrator.cli.cluster_view import render_cluster
from orchestrator.cli.common import App, abort, config_option, split_host
from orchestrator.cli.formatting import duration
from orchestrator.terminal import terminal_safe

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
        if as_json:
            click.echo(json.dumps(view, indent=2, sort_keys=True))
        else:  # what the other hosts said
            click.echo(terminal_safe(render_cluster(view)))
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
    for row in _modules(data) if name is not None else ():  # a module's instances: each
        try:
            click.echo(render_details(row))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            abort(f"{_UNREADABLE} ({type(exc).__name__}: {exc}); `status --json` shows it as it is")


def render(data: dict[str, Any], *, module_notes: bool = True) -> str:
    """The human-readable status: a summary line, one row per module, then notes (without the
    per-module ones if `module_notes` is false: `up -d` says those on stderr). A field missing
    from the supervisor's answer (another version's) shows as "-"; an answer of another shape
    altogether is one error line, exit 1. Terminal-safe: a reason can hold what a NATS server
    or another host said."""
    try:
        return terminal_safe(_render(data, module_notes=module_notes))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        abort(f"{_UNREADABLE} ({type(exc).__name__}: {exc}); `status --json` shows it as it is")


_UNREADABLE = "the supervisor's status answer is not one this version reads (another version?)"


def _own_usage(sup: dict[str, Any]) -> str:
    """ ", CPU 3%, RSS 25.1M": the supervisor's own, when it says them (not an older one)."""
    cpu, rss = sup.get("cpu_percent"), sup.get("rss_mb")
    if not (_is_number(cpu) and _is_number(rss)):
        return ""
    return f", CPU {cpu:.0f}%, RSS {rss:.1f}M"


def _render(data: dict[str, Any], *, module_notes: bool) -> str:
    sup, limits, bus = _map(data.get("supervisor")), _map(data.get("limits")), _map(data.get("bus"))
    modules = _modules(data)
    uptime = sup.get("uptime")
    lines = [
        f"supervisor pid {_text(sup.get('pid'))}, up {duration(uptime) if _is_number(uptime) else '-'}"
        f"{_own_usage(sup)}; "
        f"process limit {_text(limits.get('max_processes'))}{_bound_by(limits)}, "
        f"thread limit {_text(limits.get('max_threads'))}{_threads_granted(limits, modules)}; "
        f"bus {_text(bus.get('xsub'))} -> {_text(bus.get('xpub'))}"
    ]
    lines += [_system_line(row) for row in data.get("system", []) if row["name"] != "broker"]
    lines += _group_lines(bus.get("groups"))
    rows: list[tuple[str, ...]] = [_COLUMNS]
    notes = []
    for module in modules:
        rows.append(_row(module))
        note = _note(module) if module_notes else ""
        if note:
            notes.append(f"  {module.get('name')}: {note}")
        if module.get("schedule"):
            notes.append(f"  {module.get('name')}: {schedule_note(module['schedule'])}")
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


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _modules(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The module rows of a status answer (those that are maps)."""
    modules = data.get("modules")
    return [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    """`value` as a cell: "-" for none."""
    return "-" if value is None else str(value)


def _number(value: Any, template: str) -> str:
    """`template` filled with `value` if it is a number, else "-"."""
    return template.format(value) if _is_number(value) else "-"


def _group_lines(stats: dict[str, Any] | None) -> list[str]:
    """One line per subscription group the broker reported (see broker/groups.py)."""
    if not stats:
        return []
    lines = [
        f"group {g['group']} ({g['pattern']}): {g['members']} member(s), {g['delivered']} delivered,"
        f" {g['lost']} lost, {g['redelivered']} redelivered, {g['queued']} queued"
        + (f", {g['overflow']} overflowed" if g["overflow"] else "")
        + (f", {g['dead']} dead" if g.get("dead") else "")
        for g in stats.get("groups", [])
    ]
    if stats.get("more"):
        lines.append(f"... and {stats['more']} more group(s): see status --json")
    if stats.get("bad_frames") or stats.get("refused"):
        lines.append(
            f"groups socket: {stats.get('bad_frames', 0)} bad message(s) dropped,"
            f" {stats.get('refused', 0)} join(s) refused"
        )
    return lines


def _system_line(row: dict[str, Any]) -> str:
    """One line for a process of the supervisor's own (the cluster bridge)."""
    last = row["last_exit"]
    parts = [f"{row['name']} {row['state']}", f"pid {row['pid'] or '-'}"]
    if "host" in row:
        parts.append(f"host {row['host']}")
        if row.get("twins"):
            parts.append("another host also calls itself so (give each its own cluster.host)")
    if "nats" in row:
        parts.append(f"nats {row['nats']}")
    if "exported" in row:
        parts.append(f"events out {row['exported']}, in {row['imported']}")
        if row["unsent"]:
            parts.append(f"{row['unsent']} not sent (lost)")
        if row.get("refused"):
            parts.append(f"{row['refused']} refused from NATS (forged or copied)")
        if row.get("bad"):
            parts.append(f"{row['bad']} malformed dropped")
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
    """Settings, history and log tail of one module, after its row, terminal-safe (the log is
    the module's writing)."""
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
    lines.extend(_limit_lines(module.get("limits") or {}))
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
    return terminal_safe("\n".join(lines))


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
    last, uptime = module.get("last_exit"), module.get("uptime")
    return (
        _text(module.get("name")),
        _text(module.get("state")),
        _text(module.get("pid") or None),
        duration(uptime) if _is_number(uptime) else "-",
        _text(module.get("restarts")),
        f"{last.get('description')} ({last.get('reason')})"
        if isinstance(last, dict) and last
        else "-",
        _number(module.get("rss_mb"), "{:.1f}M"),
        _number(module.get("cpu_percent"), "{:.0f}%"),
        _number(module.get("heartbeat_age"), "{:.1f}s ago"),
        _text(module.get("events_in")),
        _text(module.get("events_out")),
        _number(module.get("next_retry"), "in {:.1f}s"),
    )


def schedule_note(schedule: dict[str, Any]) -> str:
    """`schedule '*/5 * * * *' (UTC): next run 12:05:00; last run 12:00:00: ok (1.2s); 3 runs,
    1 skipped`."""
    zone = f" ({schedule['timezone']})" if schedule["timezone"] else ""
    due = schedule["next_run"]
    parts = [
        f"schedule {schedule['cron']!r}{zone}",
        "next run "
        + (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(due)) if due is not None else "never"),
    ]
    if schedule["running"]:
        parts.append("a run is in progress")
    if schedule["last_run"] is not None and schedule["last_result"] is not None:
        when = time.strftime("%H:%M:%S", time.localtime(schedule["last_run"]))
        parts.append(f"last run {when}: {schedule['last_result']} ({schedule['last_seconds']}s)")
    counts = f"{schedule['runs']} runs, {schedule['skipped']} skipped"
    if schedule["queued"]:
        counts += f", {schedule['queued']} queued"
    return "; ".join([*parts, counts])


def _limit_lines(limits: dict[str, Any]) -> list[str]:
    """`limits:` then one line per limit the module sets, with whether it is enforced."""
    lines = ["limits:"] if limits else []
    for key, entry in limits.items():
        value = entry["value"]
        shown = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        lines.append(f"  {key} {shown}: {entry['note'] or 'enforced'}")
    return lines


def _note(module: dict[str, Any]) -> str:
    parts = []
    if module.get("why"):  # the supervisor's one line: why it is not running
        parts.append(module["why"])
    limits = module.get("limits") or {}
    parts.extend(entry["note"] for entry in limits.values() if not entry["enforced"])
    if module.get("dropped"):
        parts.append(f"{module['dropped']} events dropped on the way in (fell behind the bus)")
    parts += _resilience_notes(module)
    if parts:
        parts.append(log_hint(module))
    return "; ".join(parts)


def _bound_by(limits: dict[str, Any]) -> str:
    """What sets the process limit, when it is the supervisor's open-files limit."""
    if limits.get("bound_by") != "open files":
        return ""
    return f" (all that the open-files limit {_text(limits.get('open_files'))} holds)"


def log_hint(module: dict[str, Any]) -> str:
    """Where to read more: the installer's log when the module's dependencies failed (its own
    log has nothing of the install), else its own log."""
    if module.get("dependencies") == "failed" and module.get("install_log"):
        return f"install log: {module['install_log']}"
    return f"log: {module.get('log', '-')}"


def _threads_granted(limits: dict[str, Any], modules: list[dict[str, Any]]) -> str:
    """` (6 granted)`: the callback threads every module's processes were given, if any was
    (the supervisor's figure: `status NAME` shows one module's row; the rows' sum from a
    supervisor that does not say)."""
    total = limits.get("threads_granted")
    if not _is_number(total):
        granted = [(m.get("concurrency") or {}).get("granted") for m in modules]
        total = sum(g for g in granted if isinstance(g, int))
    return f" ({total} granted)" if total else ""


def _resilience_notes(module: dict[str, Any]) -> list[str]:
    """Callback threads held back by the thread limit, and what @retry and @circuit_breaker
    counted."""
    notes = []
    concurrency = module.get("concurrency") or {}
    asked, granted = concurrency.get("asked"), concurrency.get("granted")
    if isinstance(asked, int) and isinstance(granted, int) and granted < asked:
        notes.append(f"concurrency {granted} of {asked} asked (held back by the thread limit)")
    retries, opens = module.get("retries", 0), module.get("breaker_opens", 0)
    if retries or opens:
        notes.append(f"{retries} retries, circuit breakers opened {opens} times")
    return notes


def _log_loss(entry: dict[str, Any]) -> str:
    """One line for a log file that lost lines: a warning while it fails, then a note."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["since"]))
    lines = "line" if entry["lost"] == 1 else "lines"
    what = f"{entry['file']}: {entry['lost']} {lines} lost since {since} ({entry['error']})"
    if entry["failing"]:
        return f"warning: {what}; still failing, retrying"
    until = time.strftime("%H:%M:%S", time.localtime(entry["recovered"]))
    return f"note: {what}; writing again since {until}"
