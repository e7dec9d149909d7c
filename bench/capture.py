"""Capture of a module's output: what a module that prints 100,000 lines as fast as it can costs
the supervisor (its CPU seconds per line, from psutil, whole process, loop and all), against the
old way of handling output replayed over the same lines (bench/capture_baseline.py); and how long
a neighbour's crash takes to be running again while the printer floods, against the same crash
with the printer quiet."""

from __future__ import annotations

import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from bench import applog, capture_baseline, restart, stats
from bench.probe import BusProbe
from bench.project import BenchError, Project, running
from bench.table import Row, Target
from module_sdk import Event

LINES = 100_000
BURSTS = 3
KILLS = 5
STABLE_AFTER = 0.2
_SETTLE = STABLE_AFTER + 0.1  # past stable_after, so that the restart is immediate
_BURST_TIMEOUT = 30.0
_EVENT_TIMEOUT = 10.0
# What bench/modules/bench_printer.py prints (modules are copied into the project: no import).
LINE = "printer line {} of a module that prints a lot, padded to look like a log line"


def configure(project: Project) -> None:
    """The printer and a trivial neighbour; logs large enough not to rotate during a burst."""
    modules = [
        {"name": "printer", "path": project.add_module_file("bench_printer")},
        {"name": "neighbour", "path": project.add_module_file("trivial")},
    ]
    project.write_yaml("modules.yaml", {"modules": modules})
    project.update_main(
        app={"name": "bench-capture"},
        logging={"max_file_size_mb": 256},
        supervision={
            "stable_after": STABLE_AFTER,
            "heartbeat_interval": 0.1,
            "heartbeat_timeout": 2,
            "max_restarts": 10_000,
            "restart_window": 1,
        },
    )


def measure(project: Project) -> dict[str, Any]:
    """Bursts of LINES lines (supervisor CPU per line), then kills of the neighbour quiet and
    while the printer floods; and the in-process replays of the old and today's way."""
    configure(project)
    payload = "".join(LINE.format(i) + "\n" for i in range(LINES)).encode()
    result: dict[str, Any] = {
        "replay_us": {
            f"{way} {fmt}": capture_baseline.replay(
                payload, LINES, old=way == "old", log_format=fmt
            )
            for way in ("old", "new")
            for fmt in ("text", "json")
        }
    }
    with running(project) as status:
        supervisor = psutil.Process(status["supervisor"]["pid"])
        pids = {m["name"]: m["pid"] for m in status["modules"]}
        log = project.root / "logs" / "printer.log"
        probe = BusProbe(status["bus"]["xsub"], status["bus"]["xpub"], ["module.loaded"])
        try:
            bursts = [_burst(probe, supervisor, log, f"burst-{i}") for i in range(BURSTS)]
            result["bursts"] = bursts
            captured = log.read_bytes().count(b"printer line ")
            if captured != BURSTS * LINES:  # a figure for lines not all written means nothing
                raise BenchError(f"printer.log holds {captured} lines of {BURSTS * LINES}")
            quiet_kills: list[tuple[str, float]] = []
            result["quiet_ms"] = _kills(probe, pids, KILLS, quiet_kills)
            probe.publish("ctl.flood", {"seconds": 20})
            _wait_for(log, lambda tail: tail.count("printer line") > 2, "the flood to start")
            before = supervisor.cpu_times()
            started = time.perf_counter()
            flood_kills: list[tuple[str, float]] = []
            result["flood_ms"] = _kills(probe, pids, KILLS, flood_kills)
            result["flood_cpu_share"] = _cpu(supervisor, before) / (time.perf_counter() - started)
            probe.publish("ctl.stop")
            _wait_for(log, lambda tail: "printer flood done" in tail, "the flood to end")
        finally:
            probe.close()
    app_log = applog.lines(project.app_log)
    result["quiet_phases_ms"] = restart.phases(app_log, quiet_kills, result["quiet_ms"])
    result["flood_phases_ms"] = restart.phases(app_log, flood_kills, result["flood_ms"])
    return result


def _burst(probe: BusProbe, supervisor: psutil.Process, log: Path, run: str) -> dict[str, float]:
    """One burst: the supervisor's CPU seconds per line and the burst's wall time."""
    before = supervisor.cpu_times()
    started = time.perf_counter()
    probe.publish("ctl.print", {"run": run, "n": LINES})
    _wait_for(log, lambda tail: f"printer done {run}" in tail, f"{run}'s last line")
    seconds = time.perf_counter() - started
    return {"cpu_per_line_us": _cpu(supervisor, before) / LINES * 1e6, "seconds": seconds}


def _cpu(process: psutil.Process, before: Any) -> float:
    after = process.cpu_times()
    return float(after.user - before.user + after.system - before.system)


def _wait_for(log: Path, done: Any, what: str) -> None:
    """Poll the end of `log` (read from here, costing the supervisor nothing) until `done`."""
    deadline = time.monotonic() + _BURST_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with log.open("rb") as file:
                file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
                if done(file.read().decode("utf-8", "replace")):
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise BenchError(f"timed out after {_BURST_TIMEOUT:g}s waiting for {what}")


def _kills(
    probe: BusProbe, pids: dict[str, int], count: int, kills: list[tuple[str, float]]
) -> list[float]:
    """SIGKILL the neighbour `count` times, each once it has run past stable_after; the ms
    from each kill to its new process's `module.loaded`. Each kill's time goes to `kills`."""
    latencies = []
    ready_at = time.perf_counter()
    for _ in range(count):
        time.sleep(max(0.0, ready_at + _SETTLE - time.perf_counter()))
        old = pids["neighbour"]
        start = time.perf_counter()
        kills.append(("neighbour", time.time()))
        os.kill(old, signal.SIGKILL)
        event, ready_at = probe.wait(
            partial(_is_new_process, old_pid=old), _EVENT_TIMEOUT, "the neighbour's module.loaded"
        )
        latencies.append((ready_at - start) * 1000)
        pids["neighbour"] = int(event.data["pid"])
    return latencies


def _is_new_process(event: Event, *, old_pid: int) -> bool:
    return bool(event.data.get("name") == "neighbour" and event.data.get("pid") != old_pid)


def _phases(result: dict[str, Any]) -> str:
    flood, quiet = result["flood_phases_ms"], result["quiet_phases_ms"]
    return ", ".join(f"{key} {flood[key]:.0f} / {quiet.get(key, 0):.0f} ms" for key in flood)


def rows(result: dict[str, Any]) -> list[Row]:
    replay = result["replay_us"]
    cpu = [b["cpu_per_line_us"] for b in result["bursts"]]
    rate = stats.median([LINES / b["seconds"] for b in result["bursts"]])
    quiet, flood = result["quiet_ms"], result["flood_ms"]
    return [
        Row(
            f"capture: supervisor CPU per line, a module printing {LINES:,} lines",
            stats.median(cpu),
            "us",
            baseline=replay["old text"],
            baseline_label="the old way (a logging record per line), replayed in-process",
            target=Target("<=", 0.2, on="ratio"),
            note=f"median of {BURSTS} bursts, whole supervisor process (loop included); "
            f"the printer ran at {rate / 1000:.0f}k lines/s",
            extra={"bursts": result["bursts"], "replay_us": replay},
        ),
        Row(
            "capture: handling alone, text / JSON, in-process",
            replay["new text"],
            "us",
            baseline=replay["old text"],
            baseline_label="the old way, text",
            note=f"JSON: {replay['new json']:.2f} us, old way {replay['old json']:.1f} us",
        ),
        Row(
            "capture: neighbour crash -> running while the printer floods, median",
            stats.median(flood),
            "ms",
            baseline=stats.median(quiet),
            baseline_label="the same crash, printer quiet",
            note=f"{KILLS} kills each; supervisor CPU while flooding "
            f"{result['flood_cpu_share'] * 100:.0f}% of a core; phases (median, app.log) "
            f"flooding / quiet: {_phases(result)}; no target: on two cores the printer takes "
            "one, and the new process's start (spawned -> running) waits for CPU",
            extra={
                "flood_ms": flood,
                "quiet_ms": quiet,
                "flood_phases_ms": result["flood_phases_ms"],
                "quiet_phases_ms": result["quiet_phases_ms"],
            },
        ),
    ]
