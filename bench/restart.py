"""Crash to ready again: SIGKILL a demo module that ran past `stable_after`, time until the
supervisor publishes `module.loaded` for its new process (which it does when the child says
ready: `initialize()` returned and its bus handshake completed)."""

from __future__ import annotations

import os
import re
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

from bench import applog, stats
from bench.probe import BusProbe
from bench.project import Project, running
from bench.table import Row, Target
from module_sdk import Event

SAMPLES = 30
STABLE_AFTER = 0.2
_SETTLE = STABLE_AFTER + 0.1  # past stable_after, so that the restart is immediate
_EVENT_TIMEOUT = 10.0
_READY_IN = re.compile(r"running \(pid \d+, ready in (\d+) ms\)")


def configure(project: Project) -> None:
    """The demo's config and modules, with a short `stable_after`, fast heartbeats and no
    restart limit in reach."""
    project.copy_demo()
    project.update_main(
        supervision={
            "stable_after": STABLE_AFTER,
            "heartbeat_interval": 0.1,
            "heartbeat_timeout": 2,
            "max_restarts": 10_000,
            "restart_window": 1,
        }
    )


def measure(project: Project, samples: int = SAMPLES) -> dict[str, Any]:
    """Kill the demo modules in turn, `samples` times; returns the latencies in ms and, from
    app.log, the supervisor's own spawn-to-ready times."""
    configure(project)
    latencies: list[float] = []
    kills: list[tuple[str, float]] = []  # module, wall-clock time of the kill
    with running(project) as status:
        bus = status["bus"]
        pids = {m["name"]: m["pid"] for m in status["modules"]}
        ready_at = {name: time.perf_counter() for name in pids}
        probe = BusProbe(bus["xsub"], bus["xpub"], ["module.loaded"])
        try:
            names = sorted(pids)
            for i in range(samples):
                name = names[i % len(names)]
                time.sleep(max(0.0, ready_at[name] + _SETTLE - time.perf_counter()))
                old = pids[name]
                start = time.perf_counter()
                kills.append((name, time.time()))
                os.kill(old, signal.SIGKILL)
                event, arrived = probe.wait(
                    partial(_is_new_process, name=name, old_pid=old),
                    _EVENT_TIMEOUT,
                    f"module.loaded of {name} after SIGKILL",
                )
                latencies.append((arrived - start) * 1000)
                pids[name], ready_at[name] = int(event.data["pid"]), arrived
        finally:
            probe.close()
    return {
        "latencies_ms": latencies,
        "spawn_to_ready_ms": _spawn_to_ready(project.app_log),
        "phases_ms": phases(applog.lines(project.app_log), kills, latencies),
    }


def _is_new_process(event: Event, *, name: str, old_pid: int) -> bool:
    return bool(event.data.get("name") == name and event.data.get("pid") != old_pid)


def phases(
    log: list[tuple[float, str]], kills: list[tuple[str, float]], latencies: list[float]
) -> dict[str, float]:
    """Median ms of each phase of a restart, from app.log: the kill until the supervisor logs the
    exit, until it logs the new process started (spawned), until it logs it running (ready), and
    from there until the bench received `module.loaded`."""
    phases: dict[str, list[float]] = {
        "kill -> exit logged": [],
        "exit logged -> spawned": [],
        "spawned -> running": [],
        "running -> event received": [],
    }
    for (name, killed), latency in zip(kills, latencies, strict=True):
        exited = applog.first_after(log, killed, f"{name} exited (")
        started = exited and applog.first_after(log, exited[0], f"{name} starting (pid")
        ready = started and applog.first_after(log, started[0], f"{name} running (pid")
        if not (exited and started and ready):
            continue
        phases["kill -> exit logged"].append(exited[0] - killed)
        phases["exit logged -> spawned"].append(started[0] - exited[0])
        phases["spawned -> running"].append(ready[0] - started[0])
        phases["running -> event received"].append(killed + latency / 1000 - ready[0])
    return {key: round(stats.median(v) * 1000, 1) for key, v in phases.items() if v}


def _spawn_to_ready(app_log: Path) -> list[float]:
    """The supervisor's `ready in N ms` (spawn to the child's ready) of every restart."""
    if not app_log.exists():
        return []
    found = [float(m.group(1)) for m in _READY_IN.finditer(app_log.read_text())]
    return found[2:]  # the first two are the initial starts


def rows(result: dict[str, Any], fork_ms: float, python_ms: float) -> list[Row]:
    latencies = result["latencies_ms"]
    phases = result["phases_ms"]
    detail = {
        "samples_ms": [round(x, 2) for x in latencies],
        "summary": stats.summary(latencies),
        "phases_ms": phases,
        "spawn_to_ready_ms": result["spawn_to_ready_ms"],
    }
    note = (
        f"{len(latencies)} kills of the demo modules; a new python + import zmq, msgpack takes"
        f" {python_ms:.0f} ms; phases (median, app.log): "
        + ", ".join(f"{key} {value:.0f} ms" for key, value in phases.items())
    )
    return [
        Row(
            "restart: kill -> ready, median",
            stats.median(latencies),
            "ms",
            baseline=fork_ms,
            baseline_label="fork of a warm interpreter",
            target=Target("<=", 10, on="ratio"),
            note=note,
            extra=detail,
        ),
        Row(
            "restart: kill -> ready, p99",
            stats.percentile(latencies, 99),
            "ms",
            baseline=fork_ms,
            baseline_label="fork of a warm interpreter",
            target=Target("<=", 25, on="ratio"),
        ),
    ]
