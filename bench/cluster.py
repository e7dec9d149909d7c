"""Cross-host benchmarks: two hosts joined by the cluster bridge over a real nats-server, against
raw nats-py peers on the same server, measured in the same run with runs interleaved.

Cluster side: two bench projects as hosts `alpha` and `beta` (`cluster.name: bench`) on one
machine. The producer and the pinger run on alpha, the consumer and the ponger on beta; alpha
exports `ctl.*`, `data.*` and `rt.ping`, beta exports `rep.*` and `rt.pong`, so every data event
and every round trip crosses through both bridges and the server. The bench drives both hosts from
alpha's bus (beta's reports come back across).
Raw side: the same roles as nats-py processes (bench/nats_peer.py), one connection each.

- throughput: the producer bursts `data.one` (about 100-byte events); the rate at the consumer,
  from its first to its last event.
- round trip: alpha's pinger -> beta's ponger -> back, one at a time; raw: nats-py request/reply.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from bench import bus_driver, stats
from bench.bus_driver import Driver
from bench.nats_driver import NatsDriver, NatsServer
from bench.probe import BusProbe
from bench.project import REPO, BenchError, Project, running
from bench.table import Row, Target

N_EVENTS = 30_000
ROUND_TRIPS = 500
REPEATS = 3
DATA = "data.one"
PEERS = ("pub", "sub", "pinger", "ponger")
HOSTS: dict[str, dict[str, Any]] = {
    "alpha": {"modules": ("pub", "pinger"), "export": ["ctl.*", "data.*", "rt.ping"]},
    "beta": {"modules": ("sub", "ponger"), "export": ["rep.*", "rt.pong"]},
}


def configure(project: Project, host: str, url: str) -> None:
    """One host: its bench modules, and the cluster section that joins it to the other."""
    modules: list[dict[str, Any]] = []
    for name in HOSTS[host]["modules"]:
        config: dict[str, Any] = {"name": name}
        if name == "sub":
            config["topics"] = [DATA]
        path = project.add_module_file(f"bench_{name}")
        modules.append({"name": name, "path": path, "config": config})
    project.write_yaml("modules.yaml", {"modules": modules})
    cluster = {"servers": [url], "name": "bench", "host": host, "export": HOSTS[host]["export"]}
    project.update_main(app={"name": f"bench-{host}"}, cluster=cluster)


@contextmanager
def raw_system(scratch: Path, url: str) -> Iterator[NatsDriver]:
    """The raw nats-py peers as processes; killed on exit whatever happens."""
    procs: list[subprocess.Popen[str]] = []
    driver: NatsDriver | None = None
    try:
        for name in PEERS:
            role_args = [DATA] if name == "sub" else []
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "bench.nats_peer", name, name, url, *role_args],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise BenchError(f"a raw nats-py peer did not start: {proc.args!r}")
        driver = NatsDriver(url)
        yield driver
    finally:
        if driver is not None:
            with suppress(Exception):
                driver.publish("ctl.exit", {})
            driver.close()
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)


def _cluster_system(stack: ExitStack, scratch: Path, url: str) -> BusProbe:
    probe: BusProbe | None = None
    for host in HOSTS:
        project = Project(scratch, f"host-{host}")
        configure(project, host, url)
        status = stack.enter_context(running(project))
        if probe is None:  # the bench sits on the first host's bus
            probe = BusProbe(status["bus"]["xsub"], status["bus"]["xpub"], ["rep.*"])
            stack.callback(probe.close)
    assert probe is not None
    return probe


def measure(scratch: Path) -> dict[str, Any]:
    """Throughput and round-trip samples of both systems; runs alternate raw, cluster, ..."""
    results: dict[str, dict[str, list[Any]]] = {
        side: {"one": [], "rtt": []} for side in ("raw", "cluster")
    }
    server = NatsServer(scratch / "nats-server.log")
    try:
        with ExitStack() as stack:
            systems: dict[str, Driver] = {
                "raw": stack.enter_context(raw_system(scratch, server.url)),
                "cluster": _cluster_system(stack, scratch, server.url),
            }
            for driver in systems.values():
                bus_driver.hello(driver, PEERS, timeout=20.0)
                bus_driver.warm_up(driver, DATA, {"sub"})
                bus_driver.ping_pong(driver, "warm-rtt", 100, 15.0)
            for rep in range(REPEATS):
                for side, driver in systems.items():
                    results[side]["one"].append(
                        bus_driver.burst(
                            driver, f"x-{rep}", DATA, N_EVENTS, subscribers={"sub"}, timeout=30.0
                        )
                    )
            for rep in range(REPEATS):
                for side, driver in systems.items():
                    results[side]["rtt"].append(
                        bus_driver.ping_pong(driver, f"xrtt-{rep}", ROUND_TRIPS, 30.0)
                    )
    finally:
        server.stop()
    return results


def _share(runs: list[dict[str, Any]]) -> str:
    return f"{min(r['received_share'] for r in runs):.1%}"


def rows(results: dict[str, Any]) -> list[Row]:
    raw, ours = results["raw"], results["cluster"]
    ours_rtt = [s for run in ours["rtt"] for s in run]
    raw_rtt = [s for run in raw["rtt"] for s in run]
    return [
        Row(
            "cross-host throughput",
            stats.median([r["rate"] for r in ours["one"]]),
            "msg/s",
            baseline=stats.median([r["rate"] for r in raw["one"]]),
            baseline_label="raw nats-py",
            target=Target(">=", 0.8, on="ratio"),
            note=f"{N_EVENTS} events x {REPEATS}, alpha -> NATS -> beta, median; received/sent "
            f"(worst run): cluster {_share(ours['one'])}, raw {_share(raw['one'])}",
            extra={"cluster_runs": ours["one"], "raw_runs": raw["one"]},
        ),
        Row(
            "cross-host round trip p50",
            stats.median(ours_rtt),
            "us",
            baseline=stats.median(raw_rtt),
            baseline_label="raw nats-py",
            note=f"{ROUND_TRIPS} x {REPEATS} sequential: alpha's pinger -> beta's ponger -> "
            "alpha; raw: nats-py request/reply",
            extra={"cluster": stats.summary(ours_rtt), "raw": stats.summary(raw_rtt)},
        ),
        Row(
            "cross-host round trip p99",
            stats.percentile(ours_rtt, 99),
            "us",
            baseline=stats.percentile(raw_rtt, 99),
            baseline_label="raw nats-py",
            target=Target("<=", 1.5, on="ratio"),
        ),
    ]
