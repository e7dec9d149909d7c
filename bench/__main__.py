"""`python -m bench [--only NAME ...]`: run the benchmarks, print the table, write results.json.

`rivals` (supervisord and Circus side by side, see bench/rivals.py) runs only when named, after
the benchmarks whose figures it compares with: `make bench-compare`.

Exits 1 if a target is missed, a benchmark fails, a process is left behind or the time budget runs
out; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench import (
    baselines,
    bus,
    capture,
    cluster,
    coldstart,
    footprint,
    groups,
    hotreload,
    machine,
    restart,
    rivals,
    scrub,
)
from bench.project import Project, kill_all, processes_marked
from bench.table import Row, error_row, render

BUDGET_SECONDS = 175  # everything, set-up and tear-down included, stays under 3 minutes
RESULTS = Path(__file__).resolve().parent / "results.json"
NAMES = (
    "restart",
    "coldstart",
    "footprint",
    "bus",
    "groups",
    "hotreload",
    "capture",
    "scrub",
    "cluster",
)
OPTIONAL = ("rivals",)
RIVALS_VENV = Path(__file__).resolve().parent.parent / ".venv-compare"


class BudgetExceededError(BaseException):
    """The whole run took too long (a BaseException: no benchmark's handler swallows it)."""


def _out_of_time(signum: int, frame: FrameType | None) -> None:
    raise BudgetExceededError(f"the run exceeded its {BUDGET_SECONDS}s budget")


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _benchmarks(
    scratch: Path, base: dict[str, float], done: list[Row]
) -> dict[str, Callable[[], list[Row]]]:
    """Each benchmark: measure (in its own project) and turn the result into rows. `done` holds
    the rows of the benchmarks that ran before (rivals compares with them)."""

    def project(name: str) -> Project:
        return Project(scratch, name)

    return {
        "restart": lambda: restart.rows(
            restart.measure(project("restart")), base["fork_ms"], base["python_ms"]
        ),
        "coldstart": lambda: coldstart.rows(
            coldstart.measure(project("cold")), base["parallel_ms"], base["cli_ms"]
        ),
        "footprint": lambda: footprint.rows(
            footprint.measure(project("foot")), footprint.reference_process()
        ),
        "bus": lambda: bus.rows(bus.measure(project("bus"), scratch)),
        "groups": lambda: groups.rows(groups.measure(scratch)),
        "hotreload": lambda: hotreload.rows(hotreload.measure(project("reload"))),
        "capture": lambda: capture.rows(capture.measure(project("capture"))),
        "scrub": lambda: scrub.rows(scrub.measure()),
        "cluster": lambda: cluster.rows(cluster.measure(scratch)),
        "rivals": lambda: rivals.rows(rivals.measure(RIVALS_VENV, scratch), rivals.ours(done)),
    }


def _baselines() -> dict[str, float]:
    return {
        "fork_ms": baselines.fork_warm_interpreter(),  # first: before any thread exists
        "python_ms": baselines.new_python_with_zmq(),
        "parallel_ms": baselines.parallel_pythons_with_zmq(coldstart.MODULES),
        "cli_ms": baselines.cli_startup(),
    }


def _leftovers(scratch: Path) -> list[int]:
    """Kill whatever the bench started that is still alive; returns those pids."""
    procs = {p.pid: p for p in processes_marked(str(scratch))}
    for child in psutil.Process().children(recursive=True):
        procs.setdefault(child.pid, child)
    return kill_all(list(procs.values()))


def run(selected: list[str]) -> tuple[list[Row], dict[str, Any]]:
    scratch = Path(tempfile.mkdtemp(prefix="obench-", dir="/tmp"))
    rows: list[Row] = []
    info: dict[str, Any] = {"errors": []}
    try:
        _progress("baselines")
        base = _baselines()
        info["baselines_ms"] = base
        benchmarks = _benchmarks(scratch, base, rows)
        for name in selected:
            _progress(name)
            started = time.perf_counter()
            try:
                rows += benchmarks[name]()
            except Exception as exc:
                rows.append(error_row(name, exc))
                info["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
            info.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
    except BudgetExceededError as exc:
        rows.append(error_row("time budget", exc))
        info["errors"].append(str(exc))
    finally:
        signal.alarm(0)
        left = _leftovers(scratch)
        if left:
            rows.append(error_row("leftover processes", RuntimeError(f"killed {left}")))
        info["leftover_pids"] = left
        shutil.rmtree(scratch, ignore_errors=True)
    return rows, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="+", choices=NAMES + OPTIONAL, default=list(NAMES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    info = machine.describe()
    print(machine.headline(info), flush=True)
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(BUDGET_SECONDS)
    started = time.perf_counter()
    rows, details = run(args.only)
    elapsed = time.perf_counter() - started
    print()
    print(render(rows))
    failed = [row.figure for row in rows if row.verdict in ("FAIL", "error")]
    print(f"\n{len(failed)} missed / failed of {len(rows)} rows in {elapsed:.0f}s", flush=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": info,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(elapsed, 1),
                "rows": [row.as_dict() for row in rows],
                "details": details,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
