"""Cold start: `orchestrator up -d` with ten trivial modules, from nothing to all running."""

from __future__ import annotations

import time
from typing import Any

from bench import applog, stats
from bench.project import BenchError, Project
from bench.table import Row, Target

MODULES = 10
RUNS = 3


def configure(project: Project, count: int = MODULES) -> None:
    """`count` copies of the trivial module, default supervision settings."""
    modules = [
        {"name": f"trivial-{i}", "path": project.add_module_file("trivial", f"trivial_{i}")}
        for i in range(count)
    ]
    project.write_yaml("modules.yaml", {"modules": modules})
    project.update_main(app={"name": "bench-coldstart"})


def one_run(project: Project) -> dict[str, float]:
    """One `up -d` from a stopped project; returns its timings in ms. Leaves it running."""
    project.app_log.unlink(missing_ok=True)
    launched = time.time()  # wall clock, as app.log's timestamps
    command_s = project.up()
    status = project.status()
    if any(m["state"] != "running" for m in status["modules"]):
        raise BenchError("up -d returned with modules not running")
    lines = applog.lines(project.app_log)
    ready = [t for t, message in lines if " running (pid " in message]
    if len(ready) != MODULES or not lines:
        raise BenchError(f"app.log shows {len(ready)} modules running, expected {MODULES}")
    first_log, all_ready = lines[0][0], max(ready)
    return {
        "up_command_ms": command_s * 1000,
        "launch_to_first_log_ms": (first_log - launched) * 1000,
        "log_first_to_all_ready_ms": (all_ready - first_log) * 1000,
        "launch_to_all_ready_ms": (all_ready - launched) * 1000,
    }


def measure(project: Project, runs: int = RUNS) -> list[dict[str, float]]:
    """`runs` cold starts, each followed by `down`."""
    configure(project)
    results = []
    for _ in range(runs):
        try:
            results.append(one_run(project))
        finally:
            project.down()
        time.sleep(0.2)  # let the machine settle between runs
    return results


def rows(results: list[dict[str, Any]], parallel_ms: float, cli_ms: float) -> list[Row]:
    def med(key: str) -> float:
        return stats.median([r[key] for r in results])

    runs = {"runs": results}
    return [
        Row(
            f"cold start: {MODULES} modules ready (app.log)",
            med("log_first_to_all_ready_ms"),
            "ms",
            baseline=parallel_ms,
            baseline_label=f"{MODULES} x python + import zmq, msgpack in parallel",
            target=Target("<=", 150),
            note="from the supervisor's first app.log line to the last 'running' line; "
            f"median of {len(results)}",
            extra=runs,
        ),
        Row(
            "cold start: `up -d` launched -> all ready",
            med("launch_to_all_ready_ms"),
            "ms",
            note=f"launch -> supervisor's first log line {med('launch_to_first_log_ms'):.0f} ms "
            "(CLI start, spawn, imports, config); no target",
        ),
        Row(
            f"cold start: `up -d` with {MODULES} modules",
            med("up_command_ms"),
            "ms",
            baseline=cli_ms,
            baseline_label="orchestrator --version",
            target=Target("<", 1000),
        ),
    ]
