"""Grouped delivery: four workers sharing a group against one worker alone, in the same run.

A broker process (`python -m broker --groups ...`), the workers as processes of their own
(bench/group_worker.py, a CPU-light handler) and a publisher in the bench process. Each run
publishes a burst to one group and ends when the broker counts every event acknowledged; runs of
the two groups alternate. Spread: per run, the most events one of the four handled over the fewest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import zmq

from bench import stats
from bench.project import REPO, BenchError
from bench.table import Row, Target
from module_sdk.bus import ZmqEventBus

N_EVENTS = 10_000
REPEATS = 3
WORKERS = 4
TIMEOUT = 60.0


class _Broker:
    """The broker process and the bench's sockets on it."""

    def __init__(self, scratch: Path, stack: ExitStack) -> None:
        sockets = scratch / "groups"
        sockets.mkdir()
        self.xsub, self.xpub = f"ipc://{sockets}/xsub.sock", f"ipc://{sockets}/xpub.sock"
        self.groups = f"ipc://{sockets}/groups.sock"
        self.scratch = scratch
        out = stack.enter_context(open(sockets / "broker.out", "w"))  # noqa: SIM115
        self.procs: list[subprocess.Popen[str]] = []
        stack.callback(self._stop)
        broker = ["--xsub", self.xsub, "--xpub", self.xpub, "--groups", self.groups]
        self._spawn(["-m", "broker", *broker], stdout=out)
        deadline = time.monotonic() + 15.0
        while "ready" not in (sockets / "broker.out").read_text():
            if time.monotonic() > deadline:
                raise BenchError("the broker did not start")
            time.sleep(0.01)
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        stack.callback(self.context.destroy, 0)
        self.asker = self.context.socket(zmq.DEALER)
        self.asker.connect(self.groups)
        self.bus = ZmqEventBus(self.context, "bench", self.xsub, self.xpub)
        stack.callback(self.bus.close)
        self.bus.handshake(10.0)
        self.bus.start()

    def _spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=dict(os.environ, BENCH_SCRATCH=str(self.scratch)),  # marks it ours
            text=True,
            **kwargs,
        )
        self.procs.append(proc)
        return proc

    def worker(self, group: str) -> None:
        args = [self.xsub, self.xpub, self.groups, group, f"{group}.*"]
        proc = self._spawn(
            ["-m", "bench.group_worker", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise BenchError(f"a worker of {group} did not start")

    def group(self, name: str) -> dict[str, Any]:
        self.asker.send(b"S")
        deadline = time.monotonic() + 10.0
        while self.asker.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            frames = self.asker.recv_multipart()
            if frames[0] == b"S":
                found = [g for g in json.loads(frames[1])["groups"] if g["group"] == name]
                if not found:
                    raise BenchError(f"the broker knows no group {name}")
                return dict(found[0])
        raise BenchError("the broker did not answer a stats request")

    def _stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


@contextmanager
def _system(scratch: Path) -> Iterator[_Broker]:
    with ExitStack() as stack:
        yield _Broker(scratch, stack)


def _burst(broker: _Broker, group: str) -> dict[str, Any]:
    before = broker.group(group)
    start = time.perf_counter()
    for n in range(N_EVENTS):
        broker.bus.publish(f"{group}.job", n)
    deadline = time.monotonic() + TIMEOUT
    while True:
        after = broker.group(group)
        if after["acked"] - before["acked"] >= N_EVENTS:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"{group}: {after['acked'] - before['acked']} of {N_EVENTS} done")
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    shares = [b - a for a, b in zip(before["per_member"], after["per_member"], strict=True)]
    if after["lost"] or after["overflow"]:
        raise BenchError(f"{group}: events lost or overflowed: {after}")
    return {"rate": N_EVENTS / elapsed, "shares": shares}


def measure(scratch: Path) -> dict[str, Any]:
    """Runs of one worker and of four, alternating."""
    results: dict[str, list[dict[str, Any]]] = {"one": [], "four": []}
    with _system(scratch) as broker:
        broker.worker("one")
        for _ in range(WORKERS):
            broker.worker("four")
        for group in ("one", "four"):  # warm-up: the routes get cached
            broker.bus.publish(f"{group}.job", 0)
        for _ in range(REPEATS):
            for group in ("one", "four"):
                results[group].append(_burst(broker, group))
    return results


def rows(results: dict[str, Any]) -> list[Row]:
    one, four = results["one"], results["four"]
    spreads = [max(r["shares"]) / max(1, min(r["shares"])) for r in four]
    worst = four[spreads.index(max(spreads))]["shares"]
    return [
        Row(
            f"groups: {WORKERS} workers, CPU-light handler",
            stats.median([r["rate"] for r in four]),
            "msg/s",
            baseline=stats.median([r["rate"] for r in one]),
            baseline_label="1 worker",
            target=Target(">=", 0.8, on="ratio"),
            note=f"{N_EVENTS} events x {REPEATS}, median; each to one member, acked",
            extra={"one": one, "four": four},
        ),
        Row(
            f"groups: spread over {WORKERS} workers, max/min events",
            round(stats.median(spreads), 2),
            "x",
            target=Target("<=", 1.5),
            note=f"median of {REPEATS} runs; worst {max(spreads):.2f} ("
            + ", ".join(str(s) for s in worst)
            + " events): least busy member first, so a worker short of CPU takes fewer",
        ),
    ]
