"""A throwaway orchestrator project driven through the real CLI, and its guaranteed cleanup.

Every project lives under the bench's scratch directory (short /tmp paths, since ipc socket paths
must fit in 107 bytes) with its own run directory, so the bench never touches the user's demo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH_MODULES = Path(__file__).resolve().parent / "modules"
CLI_TIMEOUT = 30.0


class BenchError(RuntimeError):
    """Something the benchmark needs did not happen (a CLI call failed, an event never came)."""


class Project:
    """`root/config`, `root/modules`, `root/logs`; its supervisor runs with `root/run` as run base."""

    def __init__(self, scratch: Path, name: str) -> None:
        self.root = scratch / name
        self.root.mkdir(parents=True)
        self.config_dir = self.root / "config"
        self.modules_dir = self.root / "modules"
        self.modules_dir.mkdir()
        self.env = dict(os.environ, ORCHESTRATOR_RUN_BASE=str(self.root / "run"))
        self.env.pop("ORCHESTRATOR_CONFIG", None)

    # -- building -----------------------------------------------------------------------------

    def copy_demo(self) -> None:
        """The repository's demo: config/ and modules-backend/ as a user has them."""
        shutil.copytree(REPO / "config", self.config_dir)
        shutil.copytree(
            REPO / "modules-backend",
            self.root / "modules-backend",
            ignore=shutil.ignore_patterns("__pycache__", "tests"),
        )

    def add_module_file(self, source: str, as_name: str | None = None) -> str:
        """Copy `bench/modules/<source>.py` into the project; returns its path for modules.yaml."""
        target = f"{as_name or source}.py"
        shutil.copy(BENCH_MODULES / f"{source}.py", self.modules_dir / target)
        return f"../modules/{target}"

    def read_yaml(self, filename: str) -> dict[str, Any]:
        data = yaml.safe_load((self.config_dir / filename).read_text())
        return data if isinstance(data, dict) else {}

    def write_yaml(self, filename: str, data: dict[str, Any]) -> None:
        self.config_dir.mkdir(exist_ok=True)
        (self.config_dir / filename).write_text(yaml.safe_dump(data, sort_keys=False))

    def update_main(self, **sections: Any) -> None:
        """Merge `sections` into main.yaml (one level deep: `supervision={...}` updates keys)."""
        main = self.read_yaml("main.yaml") if (self.config_dir / "main.yaml").exists() else {}
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(main.get(key), dict):
                main[key].update(value)
            else:
                main[key] = value
        main.setdefault("logging", {})["directory"] = "logs"
        self.write_yaml("main.yaml", main)

    # -- driving ------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`orchestrator ARGS -c CONFIG`, bounded by `timeout`."""
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args, "-c", str(self.config_dir)],
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.root,
        )

    def up(self) -> float:
        """`up -d`; returns its wall time in seconds; raises BenchError unless it exits 0."""
        start = time.perf_counter()
        result = self.cli("up", "-d")
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise BenchError(f"up -d exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return elapsed

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        if result.returncode != 0:
            raise BenchError(f"status exited {result.returncode}: {result.stderr.strip()}")
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def down(self) -> None:
        """`down`, then SIGKILL for anything of this project still alive."""
        if self.processes():
            with suppress(subprocess.TimeoutExpired):
                self.cli("down", "--timeout", "2", timeout=20)
        kill_all(self.processes())

    def processes(self) -> list[psutil.Process]:
        """Every live process of this project: its supervisor and module processes."""
        return processes_marked(str(self.root))

    @property
    def app_log(self) -> Path:
        return self.root / "logs" / "app.log"


@contextmanager
def running(project: Project) -> Iterator[dict[str, Any]]:
    """`up -d` on entry (yields `status --json`), `down` and a kill of leftovers on exit."""
    try:
        project.up()
        yield project.status()
    finally:
        project.down()


def processes_marked(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or orchestrator environment mentions `marker`."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline", "environ", "status"]):
        if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        environ = proc.info["environ"] or {}
        if (
            marker in cmdline
            or marker in environ.get("ORCHESTRATOR_RUN_BASE", "")
            or marker in environ.get("ORCHESTRATOR_CHANNEL", "")
            or marker in environ.get("BENCH_SCRATCH", "")
        ):
            found.append(proc)
    return found


def kill_all(procs: list[psutil.Process]) -> list[int]:
    """SIGKILL and reap (when ours) each process; returns the pids that were still alive."""
    killed = []
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=3)
    return killed
