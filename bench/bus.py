"""Bus benchmarks, SDK against raw pyzmq, measured in the same run with runs interleaved.

SDK side: the bench modules in bench/modules, run by a real supervisor (`up -d`) whose broker
thread forwards between them; the bench process drives them through a `ZmqEventBus` of its own.
Raw side: the same roles as separate processes (bench/raw_peer.py) around a `zmq.proxy` process.
Each side has one publisher, four subscribers, a pinger and a ponger running throughout.

- 1:1 throughput: `pub` bursts `data.one`, which only `sub0` subscribes to.
- 1:4 fan-out: `pub` bursts `data.fan`, which all four subscribe to; the rate of the slowest.
- round trip: pinger -> ponger -> pinger, one at a time, the next ping sent from the pong's
  callback (the SDK's best case: no thread hand-off).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from bench import bus_driver, stats
from bench.bus_driver import Driver, RawDriver
from bench.probe import BusProbe
from bench.project import REPO, BenchError, Project, running
from bench.table import Row, Target

N_ONE = 100_000
N_FAN = 60_000
ROUND_TRIPS = 2000
REPEATS = 5
SUBSCRIBERS = ("sub0", "sub1", "sub2", "sub3")
PEERS = ("pub", *SUBSCRIBERS, "pinger", "ponger")
ONE, FAN = "data.one", "data.fan"


def _topics(name: str) -> list[str]:
    return [ONE, FAN] if name == "sub0" else [FAN]


def configure(project: Project) -> None:
    """The SDK side: one module per peer, default supervision settings."""
    modules: list[dict[str, Any]] = [
        {"name": "pub", "path": project.add_module_file("bench_pub"), "config": {"name": "pub"}}
    ]
    sub_path = project.add_module_file("bench_sub")
    modules += [
        {"name": name, "path": sub_path, "config": {"name": name, "topics": _topics(name)}}
        for name in SUBSCRIBERS
    ]
    for role in ("pinger", "ponger"):
        path = project.add_module_file(f"bench_{role}")
        modules.append({"name": role, "path": path, "config": {"name": role}})
    project.write_yaml("modules.yaml", {"modules": modules})
    project.update_main(app={"name": "bench-bus"})


@contextmanager
def raw_system(scratch: Path) -> Iterator[RawDriver]:
    """The raw proxy and peers as processes; killed on exit whatever happens."""
    sockets = scratch / "raw"
    sockets.mkdir()
    xsub, xpub = f"ipc://{sockets / 'xsub.sock'}", f"ipc://{sockets / 'xpub.sock'}"
    env = dict(os.environ, BENCH_SCRATCH=str(scratch))
    procs: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_peer", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    driver: RawDriver | None = None
    try:
        proxy = spawn("proxy", "proxy", xsub, xpub)
        assert proxy.stdout is not None
        if proxy.stdout.readline().strip() != "ready":
            raise BenchError("the raw proxy did not start")
        spawn("pub", "pub", xsub, xpub)
        for name in SUBSCRIBERS:
            spawn("sub", name, xsub, xpub, *_topics(name))
        spawn("pinger", "pinger", xsub, xpub)
        spawn("ponger", "ponger", xsub, xpub)
        driver = RawDriver(xsub, xpub)
        yield driver
    finally:
        if driver is not None:
            driver.publish("ctl.exit", {})
            driver.close()
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5 if proc is not procs[0] else 0.0)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)


def _sdk_system(stack: ExitStack, project: Project) -> BusProbe:
    status = stack.enter_context(running(project))
    probe = BusProbe(status["bus"]["xsub"], status["bus"]["xpub"], ["rep.*"])
    stack.callback(probe.close)
    return probe


def measure(project: Project, scratch: Path) -> dict[str, Any]:
    """Every bus figure for both systems; runs alternate raw, SDK, raw, SDK..."""
    configure(project)
    results: dict[str, dict[str, list[Any]]] = {
        side: {"one": [], "fan": [], "rtt": []} for side in ("raw", "sdk")
    }
    with ExitStack() as stack:
        systems: dict[str, Driver] = {
            "raw": stack.enter_context(raw_system(scratch)),
            "sdk": _sdk_system(stack, project),
        }
        for driver in systems.values():
            bus_driver.hello(driver, PEERS)
            bus_driver.warm_up(driver, ONE, {"sub0"})
            bus_driver.warm_up(driver, FAN, set(SUBSCRIBERS))
            bus_driver.ping_pong(driver, "warm-rtt", 200, 15.0)
        for rep in range(REPEATS):
            for side, driver in systems.items():
                results[side]["one"].append(
                    bus_driver.burst(
                        driver, f"one-{rep}", ONE, N_ONE, subscribers={"sub0"}, timeout=60.0
                    )
                )
        for rep in range(REPEATS):
            for side, driver in systems.items():
                results[side]["fan"].append(
                    bus_driver.burst(
                        driver, f"fan-{rep}", FAN, N_FAN, subscribers=set(SUBSCRIBERS), timeout=60.0
                    )
                )
        for rep in range(REPEATS):
            for side, driver in systems.items():
                results[side]["rtt"].append(
                    bus_driver.ping_pong(driver, f"rtt-{rep}", ROUND_TRIPS, 30.0)
                )
    return results


def _share(runs: list[dict[str, Any]]) -> str:
    return f"{min(r['received_share'] for r in runs):.1%}"


def rows(results: dict[str, Any]) -> list[Row]:
    raw, sdk = results["raw"], results["sdk"]
    out = []
    for key, figure, n in (
        ("one", "bus 1:1 throughput", N_ONE),
        ("fan", "bus 1:4 fan-out, slowest subscriber", N_FAN),
    ):
        out.append(
            Row(
                figure,
                stats.median([r["rate"] for r in sdk[key]]),
                "msg/s",
                baseline=stats.median([r["rate"] for r in raw[key]]),
                baseline_label="raw pyzmq",
                target=Target(">=", 0.8, on="ratio"),
                note=f"{n} events x {REPEATS}, median; received/sent (worst run): "
                f"SDK {_share(sdk[key])}, raw {_share(raw[key])}",
                extra={"sdk_runs": sdk[key], "raw_runs": raw[key]},
            )
        )
    sdk_rtt = [s for run in sdk["rtt"] for s in run]
    raw_rtt = [s for run in raw["rtt"] for s in run]
    out.append(
        Row(
            "bus round trip p50",
            stats.median(sdk_rtt),
            "us",
            baseline=stats.median(raw_rtt),
            baseline_label="raw pyzmq",
            note=f"{ROUND_TRIPS} x {REPEATS} sequential ping -> pong through the broker",
            extra={"sdk": stats.summary(sdk_rtt), "raw": stats.summary(raw_rtt)},
        )
    )
    out.append(
        Row(
            "bus round trip p99",
            stats.percentile(sdk_rtt, 99),
            "us",
            baseline=stats.percentile(raw_rtt, 99),
            baseline_label="raw pyzmq",
            target=Target("<=", 1.5, on="ratio"),
        )
    )
    return out
