"""The bench's side of the bus benchmarks: commands out, reports in, for either system.

Both systems speak one protocol (see bench/modules and bench/raw_peer.py): `ctl.hello` until every
peer answered (so both directions of the control path work); `ctl.run` for a burst of data events
(subscribers start counting afresh), answered by the publisher's `rep.sent` once it has sent them
all; then `ctl.report`, answered by each subscriber's count (`rep.recv`); `ctl.ping` for a
ping-pong series. The data path never reaches the bench process: it subscribes only to `rep.*`.

Why `ctl.report` comes after the run's last event at every subscriber: the publisher sends
`rep.sent` after its last event on the same pipe, so once the bench has it, the broker has passed
every event of the run on to the subscribers' pipes, ahead of anything the bench sends next. A
report can still be lost where a high-water mark is reached (a PUB socket drops then), so `ctl.report`
is repeated until every answer is in; answering it is idempotent.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol

import msgpack
import zmq

from bench.project import BenchError

PAYLOAD = "x" * 80  # with the sequence number, the data msgpacks to about 100 bytes
_HELLO_EVERY = 0.05
_REPORT_EVERY = 1.0


class Driver(Protocol):
    """Publishes commands and returns the reports of one system."""

    def publish(self, event_type: str, data: Any = None) -> None: ...

    def next_event(self, timeout: float) -> tuple[str, Any] | None: ...


class RawDriver:
    """A plain PUB/SUB pair on the raw proxy; a thread queues what the SUB socket receives."""

    def __init__(self, xsub: str, xpub: str) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._pub = self._context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.connect(xsub)
        self._xpub = xpub
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="raw-driver", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _receive(self) -> None:
        sub = self._context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self._xpub)
        sub.setsockopt(zmq.SUBSCRIBE, b"rep.")
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sub.poll(100, zmq.POLLIN):
                    topic, body = sub.recv_multipart()
                    self._events.put((topic.decode(), msgpack.unpackb(body)))
        finally:
            sub.close()

    def publish(self, event_type: str, data: Any = None) -> None:
        self._pub.send_multipart([event_type.encode(), msgpack.packb(data)])

    def next_event(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pub.close()
        self._context.destroy(linger=0)


def hello(driver: Driver, names: Iterable[str], timeout: float = 15.0) -> None:
    """Send `ctl.hello` until every peer in `names` has answered."""
    missing = set(names)
    deadline = time.monotonic() + timeout
    while missing:
        if time.monotonic() > deadline:
            raise BenchError(f"no answer to ctl.hello from {sorted(missing)}")
        driver.publish("ctl.hello", {})
        until = time.monotonic() + _HELLO_EVERY
        while (left := until - time.monotonic()) > 0:
            event = driver.next_event(left)
            if event is not None and event[0] == "rep.hello":
                missing.discard(event[1]["name"])


def collect(
    driver: Driver,
    wanted: dict[str, set[str]],
    run: str,
    timeout: float,
    *,
    repeat: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Reports of `run`: `wanted` maps a report type to the peers that must send one. With
    `repeat`, that command is published now and again every second until all are in."""
    missing = {(kind, name) for kind, names in wanted.items() for name in names}
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    next_repeat = time.monotonic()
    while missing:
        now = time.monotonic()
        if now >= deadline:
            raise BenchError(f"run {run}: no report from {sorted(missing)} within {timeout:g}s")
        if repeat is not None and now >= next_repeat:
            driver.publish(repeat, {"run": run})
            next_repeat = now + _REPORT_EVERY
        wait = min(deadline, next_repeat) - now if repeat is not None else deadline - now
        event = driver.next_event(max(0.0, wait))
        if event is None:
            continue
        kind, data = event
        key = (kind, data.get("name") if isinstance(data, dict) else None)
        if key in missing and data.get("run") == run:
            missing.discard(key)
            found[f"{kind}:{key[1]}"] = data
    return found


def burst(
    driver: Driver, run: str, topic: str, n: int, *, subscribers: set[str], timeout: float
) -> dict[str, Any]:
    """One burst of `n` events of `topic`; the rate (msg/s) and the share received at the
    slowest subscriber, from its first to its last message."""
    driver.publish("ctl.run", {"run": run, "topic": topic, "n": n, "payload": PAYLOAD})
    reports: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(BenchError):  # lost to a full pipe: ctl.report asks again
        reports = collect(driver, {"rep.sent": {"pub"}}, run, timeout)
    wanted = {"rep.recv": subscribers, "rep.sent": set() if reports else {"pub"}}
    reports |= collect(driver, wanted, run, timeout, repeat="ctl.report")
    sent = int(reports["rep.sent:pub"]["sent"])
    rates, shares = {}, {}
    for name in subscribers:
        report = reports[f"rep.recv:{name}"]
        received = int(report["received"])
        span = float(report["last"]) - float(report["first"])
        rates[name] = (received - 1) / span if received > 1 and span > 0 else 0.0
        shares[name] = received / sent if sent else 0.0
    return {
        "rate": min(rates.values()),
        "received_share": min(shares.values()),
        "sent": sent,
        "send_seconds": float(reports["rep.sent:pub"]["seconds"]),
        "rates": rates,
    }


def ping_pong(driver: Driver, run: str, k: int, timeout: float) -> list[float]:
    """`k` sequential round trips pinger -> ponger -> pinger; the samples in microseconds."""
    driver.publish("ctl.ping", {"run": run, "k": k, "payload": PAYLOAD})
    report = collect(driver, {"rep.rtt": {"pinger"}}, run, timeout)["rep.rtt:pinger"]
    return [float(s) * 1e6 for s in report["samples"]]


def warm_up(driver: Driver, topic: str, subscribers: set[str], tries: int = 5) -> None:
    """Small bursts until one arrives complete at every subscriber: the publisher's PUB socket
    then has every subscription, and every process has its code paths warm."""
    for attempt in range(tries):
        result = burst(
            driver, f"warm-{topic}-{attempt}", topic, 2000, subscribers=subscribers, timeout=15.0
        )
        if result["received_share"] >= 1.0:
            return
    raise BenchError(f"warm-up bursts on {topic} never arrived complete")
