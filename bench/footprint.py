"""Footprint: the supervisor's memory and idle CPU with ten modules, and each module's USS.

The ten modules are the demo's two (default supervision: heartbeats every second, the producer
publishing every 5 s) plus eight trivial ones. The supervisor is measured twice: with the
defaults (hot reload off; the RSS target applies), and with hot reload on, as the demo has it
(watchdog's imports and observer threads; reported, and the idle CPU target applies to it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import psutil

from bench.project import Project, running
from bench.table import Row, Target

_MB = 1024 * 1024
MODULES = 10
IDLE_SECONDS = 3.0
_SETTLE = 1.0  # after `up -d`, let start-up work (imports, first heartbeats) finish
_DEMO = ("mod-dummy-producer", "mod-dummy-consumer")
_REFERENCE = (
    "import sys, zmq, msgpack; c = zmq.Context(); s = c.socket(zmq.PUB); "
    "print('ok', flush=True); sys.stdin.read()"
)


def configure(project: Project) -> None:
    project.copy_demo()
    modules = project.read_yaml("modules.yaml")["modules"]
    for i in range(MODULES - len(modules)):
        path = project.add_module_file("trivial", f"trivial_{i}")
        modules.append({"name": f"trivial-{i}", "path": path})
    project.write_yaml("modules.yaml", {"modules": modules})


def reference_process() -> dict[str, float]:
    """RSS and USS (MB) of a bare `python` with zmq and msgpack imported and a context open."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _REFERENCE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        info = psutil.Process(proc.pid).memory_full_info()
        return {"rss_mb": info.rss / _MB, "uss_mb": info.uss / _MB}
    finally:
        proc.kill()
        proc.wait(timeout=10)


def measure(project: Project) -> dict[str, Any]:
    """Both configurations, one after the other: `{"defaults": ..., "hot_reload": ...}`."""
    configure(project)
    results = {}
    for key, hot_reload in (("defaults", False), ("hot_reload", True)):
        project.update_main(hot_reload=hot_reload)
        results[key] = _measure_running(project)
    return results


def _measure_running(project: Project) -> dict[str, Any]:
    with running(project) as status:
        time.sleep(_SETTLE)
        supervisor = psutil.Process(status["supervisor"]["pid"])
        modules = {}
        for module in status["modules"]:
            info = psutil.Process(module["pid"]).memory_full_info()
            modules[module["name"]] = {"rss_mb": info.rss / _MB, "uss_mb": info.uss / _MB}
        sup_memory = supervisor.memory_full_info()
        before, wall = supervisor.cpu_times(), time.perf_counter()
        time.sleep(IDLE_SECONDS)
        after, wall = supervisor.cpu_times(), time.perf_counter() - wall
        busy = (after.user - before.user) + (after.system - before.system)
        return {
            "modules_running": sum(1 for m in status["modules"] if m["state"] == "running"),
            "supervisor_rss_mb": sup_memory.rss / _MB,
            "supervisor_uss_mb": sup_memory.uss / _MB,
            "supervisor_threads": supervisor.num_threads(),
            "supervisor_idle_cpu_percent": busy / wall * 100,
            "idle_seconds": wall,
            "modules": modules,
        }


def rows(results: dict[str, Any], reference: dict[str, float]) -> list[Row]:
    result, hot = results["defaults"], results["hot_reload"]
    demo = {name: result["modules"][name] for name in _DEMO if name in result["modules"]}
    trivial = [m["uss_mb"] for n, m in result["modules"].items() if n not in _DEMO]
    out = [
        Row(
            f"supervisor RSS, {result['modules_running']} modules",
            result["supervisor_rss_mb"],
            "MB",
            baseline=reference["rss_mb"],
            baseline_label="python + zmq, msgpack",
            target=Target("<=", 1.5, on="ratio"),  # performance round 2 (was 25 MB)
            note=f"defaults (hot reload off); USS {result['supervisor_uss_mb']:.1f} MB, "
            f"{result['supervisor_threads']} threads",
            extra=results,
        ),
        Row(
            f"supervisor RSS, {hot['modules_running']} modules, hot reload on, over off",
            hot["supervisor_rss_mb"] - result["supervisor_rss_mb"],
            "MB",
            target=Target("<=", 1.0),  # performance round 2: at most off + 1 MB
            note=f"{hot['supervisor_rss_mb']:.1f} MB against {result['supervisor_rss_mb']:.1f} MB"
            f" off: watchdog's imports and observer threads, used only with hot_reload: true; "
            f"{hot['supervisor_threads']} threads",
        ),
    ]
    for name, memory in demo.items():
        out.append(
            Row(
                f"module USS: {name}",
                memory["uss_mb"],
                "MB",
                baseline=reference["uss_mb"],
                baseline_label="python + zmq, msgpack",
                target=Target("<=", 8),
                note=f"RSS {memory['rss_mb']:.1f} MB",
            )
        )
    if trivial:
        out.append(
            Row(
                "module USS: trivial module (max of 8)",
                max(trivial),
                "MB",
                baseline=reference["uss_mb"],
                baseline_label="python + zmq, msgpack",
                note="no target; for comparison with the demo modules",
            )
        )
    out.append(
        Row(
            f"supervisor idle CPU, {hot['modules_running']} modules",
            hot["supervisor_idle_cpu_percent"],
            "%",
            target=Target("<", 1.0),
            note=f"hot reload on; user+system time over {hot['idle_seconds']:.1f} s, % of one "
            f"core (resolution {100 / os.sysconf('SC_CLK_TCK') / hot['idle_seconds']:.2f} %: "
            "one clock tick); heartbeats every 1 s (default)",
        )
    )
    return out
