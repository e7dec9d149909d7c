"""A module in a real child process, under a real supervisor and broker, for integration tests.

`RunningModule.start(path, config)` writes a throwaway config for that one module, starts it with
`orchestrator up -d` (through the command line: `module_sdk` never imports the supervisor), and
joins the bus as a client that records every event. The `module_process` pytest fixture wraps it.
Its supervisor dies with the test process, even one killed before its teardown ran: a guard
(`module_sdk.harness_guard`) takes it down then.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event, Pattern
from module_sdk.harness_guard import ENV_HARNESS_BASE, RELEASE

_COMMAND_TIMEOUT = 60.0


class HarnessError(RuntimeError):
    """The supervisor could not start the module, or a command failed."""


class RunningModule:
    """One module running under its own supervisor; `stop()` takes everything down."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.config_dir = root / "config"
        self.env = dict(os.environ, ORCHESTRATOR_RUN_BASE=str(root / "run"))
        self.env.pop("ORCHESTRATOR_CONFIG", None)
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._bus: ZmqEventBus | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._guard_pipe = -1  # the write end: its end-of-file tells the guard we are gone

    @classmethod
    def start(
        cls,
        path: str | os.PathLike[str],
        config: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> RunningModule:
        """Run the module at `path` (a file or package) with `config`; `settings` are extra keys
        of its modules.yaml entry (`restart`, `stop_timeout`, ...). Returns once it is running."""
        source = Path(path).resolve()
        if name is None:
            name = source.stem if source.suffix == ".py" else source.name
        base = os.environ.get(ENV_HARNESS_BASE) or "/tmp"  # ipc paths stay short
        root = Path(tempfile.mkdtemp(prefix="orch-mod-", dir=base))
        running = cls(root, name)
        try:
            running._start_guard()
            running._write_config(source, config or {}, settings or {})
            running._run("up", "-d")
            running._join_bus()
        except BaseException:
            running.stop()
            raise
        return running

    # -- talking to it ----------------------------------------------------------------------

    def publish(self, event_type: str, data: Any = None) -> None:
        """Publish an event on the module's bus (source `test`)."""
        assert self._bus is not None
        self._bus.publish(event_type, data)

    def events(self, pattern: str = "*") -> list[Event]:
        """Every event seen on the bus since `start()` returned that matches `pattern` (the
        supervisor's too; what the module published inside `initialize()` came before)."""
        matcher = Pattern.parse(pattern)
        with self._lock:
            return [event for event in self._events if matcher.matches(event.type)]

    def wait_for(
        self,
        pattern: str,
        predicate: Callable[[Event], bool] = lambda event: True,
        timeout: float = 10.0,
    ) -> Event:
        """The first event matching `pattern` and `predicate`, waiting up to `timeout` seconds;
        raises AssertionError (with what was seen) if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            found = [event for event in self.events(pattern) if predicate(event)]
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                seen = [event.type for event in self.events()][-10:]
                raise AssertionError(f"no {pattern} event within {timeout:g}s; last seen: {seen}")
            time.sleep(0.005)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """The module's log once it contains `text`; raises AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{text!r} not in {self.name}'s log within {timeout:g}s:\n{log}"
                )
            time.sleep(0.01)
        return log

    def status(self) -> dict[str, Any]:
        """The module's row of `orchestrator status NAME --json`."""
        result = self._run("status", self.name, "--json")
        row: dict[str, Any] = json.loads(result.stdout)["modules"][0]
        return row

    def log(self) -> str:
        """The module's log so far (its stdout, stderr and logging)."""
        path = self.root / "logs" / f"{self.name}.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Stop the module and its supervisor, leave the bus, and remove the scratch directory."""
        if self._bus is not None:
            self._bus.close(timeout=1.0)
            self._bus = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        if (self.root / "run").exists():
            subprocess.run(
                [sys.executable, "-m", "orchestrator", "down", "-c", str(self.config_dir)],
                capture_output=True,
                env=self.env,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        self._release_guard()

    # -- internals ----------------------------------------------------------------------------

    def _start_guard(self) -> None:
        """Start the guard that takes our supervisor down if this process dies first."""
        read_end, self._guard_pipe = os.pipe()  # neither inherited by what we run
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-m", "module_sdk.harness_guard", str(self.root)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # out of reach of what ends the test's process group
            )
        finally:
            os.close(read_end)

    def _release_guard(self) -> None:
        """Tell the guard that all is stopped, and wait for it to exit."""
        if self._guard_pipe >= 0:
            with contextlib.suppress(OSError):  # it is gone already
                os.write(self._guard_pipe, RELEASE)
            os.close(self._guard_pipe)
            self._guard_pipe = -1
        if self._guard is not None:
            try:
                self._guard.wait(_COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._guard.kill()
                self._guard.wait()
            self._guard = None

    def _write_config(self, source: Path, config: dict[str, Any], settings: dict[str, Any]) -> None:
        self.config_dir.mkdir()
        main = {
            "logging": {"level": "INFO", "directory": "logs"},
            "supervision": {"heartbeat_interval": 0.2, "stop_timeout": 3},
        }
        entry = {"name": self.name, "path": str(source), "config": config, **settings}
        # JSON is YAML: no YAML writer needed here.
        (self.config_dir / "main.yaml").write_text(json.dumps(main))
        (self.config_dir / "modules.yaml").write_text(json.dumps({"modules": [entry]}))

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *args, "-c", str(self.config_dir)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise HarnessError(
                f"orchestrator {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.strip()}\n--- {self.name}'s log ---\n{self.log()}"
            )
        return result

    def _join_bus(self) -> None:
        bus_info = json.loads(self._run("status", "--json").stdout)["bus"]
        self._context = zmq.Context()
        self._bus = ZmqEventBus(self._context, "test", bus_info["xsub"], bus_info["xpub"])
        self._bus.subscribe("*", self._record)
        self._bus.handshake(10.0)
        self._bus.start()

    def _record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
