"""Side by side: supervisord and Circus running the same ten children, in the same run.

`make bench-compare` installs both into `.venv-compare` (they are not dependencies of ours) and
runs this after orchestrator's own restart, cold start and footprint benchmarks, so that every
ratio compares figures taken minutes apart on the same machine. Each tool runs with its
defaults, as a user would have it, plus Circus with `check_delay = 1`; the children are the same
ten Python processes that import zmq and msgpack and then wait (bench/modules/rival_child.py).

What "running again" means is each tool's own notion: supervisord's RUNNING (the process stayed
up `startsecs`, 1 s by default), Circus's process list holding a new pid; for orchestrator, the
new module process said ready on the bus. Both tools are asked over their own control protocol
(supervisord's XML-RPC, Circus's JSON over ZeroMQ), not their CLIs, so that asking costs little.
supervisord's loop sleeps up to 1 s between looks at its children unless a request wakes it:
polling it every few milliseconds, as here, gives its best case, not its typical one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xmlrpc.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import psutil
import zmq

from bench import stats
from bench.project import BENCH_MODULES, BenchError, kill_all
from bench.table import Row, Target

CHILDREN = 10
KILLS = 5
KILLS_SLOW = 3  # Circus at its default check_delay takes seconds per restart
_POLL = 0.002
_TIMEOUT = 15.0
_MB = 1024 * 1024


class Rival(Protocol):
    """One running tool with its ten children."""

    name: str
    launched: float  # perf_counter() just before its daemon was started
    daemon: subprocess.Popen[bytes]

    def started_pids(self) -> list[int]:
        """The pids of the children the tool considers started (running) now."""
        ...

    def close(self) -> None:
        """Release the control connection (after the daemon has stopped)."""
        ...


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + _TIMEOUT
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(_POLL)
    raise BenchError(f"{what}: not within {_TIMEOUT:g}s")


class Supervisord:
    """supervisord with one program of ten processes and its XML-RPC interface on a tcp port."""

    def __init__(self, venv: Path, directory: Path, child: list[str]) -> None:
        self.name = "supervisord"
        port = _free_port()
        config = directory / "supervisord.conf"
        config.write_text(
            f"[supervisord]\nlogfile={directory}/supervisord.log\npidfile={directory}/sd.pid\n"
            f"childlogdir={directory}\n"
            f"[inet_http_server]\nport=127.0.0.1:{port}\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            f"[program:child]\ncommand={' '.join(child)}\nnumprocs={CHILDREN}\n"
            "process_name=%(program_name)s_%(process_num)d\nautorestart=true\n"
        )
        self._rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
        self.launched = time.perf_counter()
        self.daemon = subprocess.Popen(
            [str(venv / "bin" / "supervisord"), "-n", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def started_pids(self) -> list[int]:
        try:
            infos: list[dict[str, Any]] = self._rpc.supervisor.getAllProcessInfo()  # type: ignore[assignment]
        except (OSError, xmlrpc.client.Error):
            return []
        return [int(p["pid"]) for p in infos if p["statename"] == "RUNNING"]

    def close(self) -> None:
        """Nothing to release: each XML-RPC call opens its own connection."""


class Circus:
    """circusd with one watcher of ten processes, asked over its ZeroMQ control endpoint."""

    def __init__(self, venv: Path, directory: Path, child: list[str], check_delay: int) -> None:
        self.name = f"Circus (check_delay {check_delay})"
        endpoint = f"tcp://127.0.0.1:{_free_port()}"
        config = directory / "circus.ini"
        config.write_text(
            f"[circus]\ncheck_delay = {check_delay}\nendpoint = {endpoint}\n"
            f"pubsub_endpoint = tcp://127.0.0.1:{_free_port()}\nstatsd = False\n"
            f"[watcher:child]\ncmd = {' '.join(child)}\nnumprocesses = {CHILDREN}\n"
        )
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RECONNECT_IVL, 5)  # not 100 ms late once circusd binds
        self._socket.connect(endpoint)
        self.launched = time.perf_counter()
        self.daemon = subprocess.Popen(
            [str(venv / "bin" / "circusd"), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def started_pids(self) -> list[int]:
        request = {"id": uuid.uuid4().hex, "command": "list", "properties": {"name": "child"}}
        self._socket.send_string(json.dumps(request))
        while self._socket.poll(1000):  # none: not up yet (a late answer is dropped next time)
            answer = json.loads(self._socket.recv())
            if answer.get("id") == request["id"]:
                return [int(pid) for pid in answer.get("pids", [])]
        return []

    def close(self) -> None:
        self._socket.close()
        self._context.destroy(linger=0)


@contextmanager
def _running(rival: Rival) -> Iterator[float]:
    """Yields the ms from the daemon's launch until all ten children were started; stops it,
    and kills whatever of its tree it left behind."""
    try:
        _wait(lambda: len(rival.started_pids()) == CHILDREN, f"{rival.name}: ten children")
        yield (time.perf_counter() - rival.launched) * 1000
    finally:
        tree: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            tree = psutil.Process(rival.daemon.pid).children(recursive=True)
        with contextlib.suppress(ProcessLookupError):
            rival.daemon.send_signal(signal.SIGTERM)
        try:
            rival.daemon.wait(15)
        except subprocess.TimeoutExpired:
            rival.daemon.kill()
            rival.daemon.wait(5)
        kill_all(tree)  # normally none are left: each tool stops its children
        rival.close()


def _measure(rival: Rival, kills: int) -> dict[str, Any]:
    with _running(rival) as cold_ms:
        rss_mb = psutil.Process(rival.daemon.pid).memory_info().rss / _MB
        restarts = []
        for _ in range(kills):
            before = set(_wait(rival.started_pids, f"{rival.name}: started children"))
            victim = min(before)
            time.sleep(1.2)  # past supervisord's startsecs, so that this is a plain crash
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            _wait(partial(_replaced, rival, before), f"{rival.name}: a new child after a kill")
            restarts.append((time.perf_counter() - killed) * 1000)
    return {"cold_start_ms": cold_ms, "rss_mb": rss_mb, "restart_ms": restarts}


def _replaced(rival: Rival, before: set[int]) -> bool:
    """Ten children started again, one of them new."""
    now = set(rival.started_pids())
    return len(now) == CHILDREN and bool(now - before)


def measure(venv: Path, scratch: Path) -> dict[str, dict[str, Any]]:
    """Both tools, one after the other, each in its own directory under `scratch`."""
    for tool in ("supervisord", "circusd"):
        if not (venv / "bin" / tool).exists():
            raise BenchError(f"{venv}/bin/{tool} is missing: run `make bench-compare`")
    directory = scratch / "rivals"
    directory.mkdir()
    child_file = directory / "rival_child.py"
    shutil.copy(BENCH_MODULES / "rival_child.py", child_file)
    child = [sys.executable, str(child_file)]
    results = {}
    for key, make, kills in (
        ("supervisord", lambda d: Supervisord(venv, d, child), KILLS),
        ("circus_1", lambda d: Circus(venv, d, child, check_delay=1), KILLS),
        ("circus_5", lambda d: Circus(venv, d, child, check_delay=5), KILLS_SLOW),
    ):
        own = directory / key
        own.mkdir()
        results[key] = {"name": "", **_measure(rival := make(own), kills)}
        results[key]["name"] = rival.name
    return results


def ours(done: list[Row]) -> dict[str, float]:
    """Orchestrator's figures among the rows of this run (from the benchmarks run before this
    one), keyed as in `measure`'s results."""
    found = {}
    for row in done:
        if row.value is None:
            continue
        if row.figure == "restart: kill -> ready, median":
            found["restart_ms"] = row.value
        elif row.figure == "cold start: `up -d` launched -> all ready":
            found["cold_start_ms"] = row.value
        elif row.figure.startswith("supervisor RSS, ") and "hot reload" not in row.figure:
            found["rss_mb"] = row.value  # the defaults' row (however many modules ran)
    return found


def rows(results: dict[str, dict[str, Any]], ours: dict[str, float]) -> list[Row]:
    """One row per tool and figure; the baseline is orchestrator's figure from this run."""
    out = []
    for result in results.values():
        tool = result["name"]
        figures = (
            ("crash -> running again, median", stats.median(result["restart_ms"]), "ms",
             "restart_ms", f"{len(result['restart_ms'])} kills"),
            ("launch -> 10 children running", result["cold_start_ms"], "ms", "cold_start_ms",
             "the daemon's launch until its control interface lists ten started children"),
            ("daemon RSS with 10 children", result["rss_mb"], "MB", "rss_mb", ""),
        )  # fmt: skip
        for figure, value, unit, key, note in figures:
            out.append(
                Row(
                    f"{tool}: {figure}",
                    value,
                    unit,
                    baseline=ours.get(key),
                    baseline_label="orchestrator, this run",
                    note=note,
                )
            )
    circus = results.get("circus_1")
    if circus is not None and "cold_start_ms" in ours:
        out.append(  # performance round 2's target: launch in half Circus's time
            Row(
                "`up -d` launched -> all ready, against Circus",
                ours["cold_start_ms"],
                "ms",
                baseline=circus["cold_start_ms"],
                baseline_label="Circus (check_delay 1): launch -> 10 children running",
                target=Target("<=", 0.5, on="ratio"),
                note="ours: ready means proven on the bus; Circus's: listed as started",
            )
        )
    return out
