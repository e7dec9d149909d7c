"""A throwaway orchestrator project for integration tests: config, modules, CLI, and cleanup.

Every test project lives in a short directory under /tmp (ipc socket paths must stay short), with
its own run directory, so that tests never see each other's supervisors.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml
from helpers import wait_until

from orchestrator.cgroups import ModuleCgroups, cgroup2_root
from orchestrator.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
PROBES = Path(__file__).resolve().parent / "modules"
FAST_SUPERVISION = {"heartbeat_interval": 0.2, "heartbeat_timeout": 5, "stop_timeout": 3}


class Project:
    """A project directory with `config/`, `modules/` and `logs/`, driven through the real CLI."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="orch-", dir="/tmp"))
        self.config_dir = self.root / "config"
        self.config_dir.mkdir()
        (self.root / "modules").mkdir()
        self.env = dict(os.environ, ORCHESTRATOR_RUN_BASE=str(self.root / "run"))
        self.env.pop("ORCHESTRATOR_CONFIG", None)
        self.command_prefix: list[str] = []  # what every CLI command runs under (e.g. nsenter)
        self._foreground: list[subprocess.Popen[str]] = []

    # -- building the project --------------------------------------------------------------------

    def probe(self, name: str) -> str:
        """Copy probe module `name` from tests/integration/modules; returns its path for modules.yaml."""
        shutil.copy(PROBES / f"{name}.py", self.root / "modules" / f"{name}.py")
        return f"../modules/{name}.py"

    def write_module(self, filename: str, source: str) -> str:
        (self.root / "modules" / filename).write_text(source)
        return f"../modules/{filename}"

    def configure(self, modules: list[dict[str, Any]], **main: Any) -> None:
        """Write modules.yaml and main.yaml (logs in this project, fast heartbeats by default)."""
        main.setdefault("logging", {"level": "INFO", "directory": "logs"})
        main.setdefault("supervision", dict(FAST_SUPERVISION))
        (self.config_dir / "main.yaml").write_text(yaml.safe_dump(main))
        (self.config_dir / "modules.yaml").write_text(yaml.safe_dump({"modules": modules}))

    def copy_demo(self) -> None:
        """The repository's own demo: config/ and modules-backend/, as a user clones them."""
        shutil.rmtree(self.config_dir)
        shutil.copytree(REPO / "config", self.config_dir)
        shutil.copytree(REPO / "modules-backend", self.root / "modules-backend")

    @property
    def record_file(self) -> Path:
        return self.root / "record.jsonl"

    def recorded(self) -> list[dict[str, Any]]:
        """What the recorder probe has written so far."""
        if not self.record_file.exists():
            return []
        lines = self.record_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    # -- driving it ----------------------------------------------------------------------------------

    def cli(
        self, *args: str, timeout: float = 60.0, check: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `orchestrator ARGS -c CONFIG`; with `check`, assert the exit code."""
        command = [sys.executable, "-m", "orchestrator", *args, "-c", str(self.config_dir)]
        result = subprocess.run(
            [*self.command_prefix, *command],
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.root,
        )
        if check is not None:
            assert result.returncode == check, describe(result)
        return result

    def up(self) -> dict[str, Any]:
        """`up -d`, which must succeed; returns `status --json`."""
        self.cli("up", "-d", check=0)
        return self.status()

    def start_foreground(self) -> subprocess.Popen[str]:
        """`up` in the foreground, as a user at a terminal runs it."""
        command = [sys.executable, "-m", "orchestrator", "up", "-c", str(self.config_dir)]
        proc = subprocess.Popen(
            [*self.command_prefix, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            cwd=self.root,
        )
        self._foreground.append(proc)
        return proc

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json", check=0)
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def module(self, name: str) -> dict[str, Any]:
        """One module's row of `status --json`."""
        return next(m for m in self.status()["modules"] if m["name"] == name)

    def wait_module(self, name: str, timeout: float = 15.0, **expected: Any) -> dict[str, Any]:
        """Poll `status` until module `name` has every `expected` field value."""
        last: dict[str, Any] = {}

        def matches() -> dict[str, Any] | None:
            nonlocal last
            result = self.cli("status", name, "--json")
            if result.returncode != 0:  # a foreground supervisor may not be up yet
                last = {"status": describe(result)}
                return None
            last = json.loads(result.stdout)["modules"][0]
            return last if all(last.get(k) == v for k, v in expected.items()) else None

        return wait_until(
            matches, timeout, f"{name} with {expected}", lambda: f"last: {last}\n{self.log(name)}"
        )

    def log(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text() if path.exists() else f"(no {path})"

    @property
    def run_base(self) -> Path:
        return self.root / "run"

    def forked(self, pid: int) -> bool:
        """Whether process `pid` (a module's, the broker) was forked by the fork server's
        template rather than spawned as an interpreter of its own: it has the template's command
        line, which is the supervisor's (the first template is a fork of it) or, for a template
        started later, `python -m module_sdk.forkserver`."""
        cmdline = psutil.Process(pid).cmdline()
        supervisor = psutil.Process(self.status()["supervisor"]["pid"]).cmdline()
        return cmdline == supervisor or "module_sdk.forkserver" in cmdline

    def processes(self) -> list[psutil.Process]:
        """Every live process of this project: the supervisor, its fork server, module processes
        and whatever they started. All inherit ORCHESTRATOR_RUN_BASE, which names this project
        (/proc shows a forked module the environment its template was started with)."""
        marker = str(self.run_base)
        found = []
        for proc in psutil.process_iter(["environ", "status"]):
            info = proc.info
            if info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            if (info["environ"] or {}).get("ORCHESTRATOR_RUN_BASE") == marker:
                found.append(proc)
        return found

    def cgroup_left(self) -> bool:
        """Whether this run's cgroup directory is still there (a supervisor removes it as it
        stops; there is none where cgroup v2 is not writable)."""
        root = cgroup2_root()
        key = RunDir(self.config_dir, self.run_base).key
        return root is not None and (root / f"orchestrator-{key}").exists()

    def socket_files(self) -> list[Path]:
        return list(self.run_base.rglob("*.sock")) if self.run_base.exists() else []

    def cleanup(self) -> None:
        """Stop whatever is still running (a failing test's leftovers) and remove the directory."""
        if self.processes():
            self.cli("down", "--timeout", "2", timeout=30)
        for proc in self._foreground:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for proc in self.processes():
            proc.kill()
        # A supervisor that was SIGKILLed could not remove its (empty) cgroups.
        ModuleCgroups(RunDir(self.config_dir, self.run_base).key).close()
        shutil.rmtree(self.root, ignore_errors=True)


def cgroups_writable() -> bool:
    """Whether this machine lets a supervisor make cgroup v2 directories (a probe, removed)."""
    probe = ModuleCgroups(f"probe-{uuid.uuid4().hex[:8]}")
    try:
        return probe.available()
    finally:
        probe.close()


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A CLI call's exit code and output, for assertion messages."""
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def projects() -> Iterator[Project]:
    project = Project()
    try:
        yield project
    finally:
        project.cleanup()
