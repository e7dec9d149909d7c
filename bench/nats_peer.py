"""The raw nats-py baseline of the cluster benchmarks: the code a user would write by hand.

`python -m bench.nats_peer ROLE NAME URL [TOPIC...]`, ROLE one of pub, sub, pinger, ponger. Each
peer is one process with one nats-py connection, `msgpack.packb` + `publish` out and a subscription
callback + `msgpack.unpackb` in, and speaks the control protocol of the bench modules (ctl.hello,
ctl.run, ctl.report, ctl.ping, ctl.exit; rep.* answers) on subjects `raw.<type>`. The round trip
is nats-py's own request/reply: the pinger's `request` to the ponger's `respond`.

It prints `ready` once its subscriptions are at the server.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

PREFIX = "raw."
REQUEST_TIMEOUT = 5.0


def subject(event_type: str) -> str:
    """The subject of an event type on the raw side."""
    return PREFIX + event_type


class Peer:
    """One role's state; `on_ctl` handles the control commands every role shares."""

    def __init__(self, nc: Client, name: str, role: str, done: asyncio.Event) -> None:
        self.nc, self.name, self.role, self.done = nc, name, role, done
        self.last_report: dict[str, Any] = {}
        self.run, self.count, self.first, self.last = "", 0, 0.0, 0.0

    async def send(self, event_type: str, data: Any) -> None:
        await self.nc.publish(subject(event_type), msgpack.packb(data))

    async def on_ctl(self, msg: Msg) -> None:
        kind = msg.subject[len(PREFIX) :]
        cmd: dict[str, Any] = msgpack.unpackb(msg.data)
        if kind == "ctl.hello":
            await self.send("rep.hello", {"name": self.name})
        elif kind == "ctl.exit":
            self.done.set()
        elif self.role == "pub":
            await self._pub_ctl(kind, cmd)
        elif self.role == "sub":
            await self._sub_ctl(kind, cmd)
        elif self.role == "pinger" and kind == "ctl.ping":
            await self._pings(cmd)

    async def _pub_ctl(self, kind: str, cmd: dict[str, Any]) -> None:
        if kind == "ctl.run":
            publish, packb = self.nc.publish, msgpack.packb
            topic, payload = subject(cmd["topic"]), cmd["payload"]
            start = time.perf_counter()
            for i in range(int(cmd["n"])):
                await publish(topic, packb({"s": i, "p": payload}))
            seconds = time.perf_counter() - start
            self.last_report = {"name": self.name, "run": cmd["run"], "sent": cmd["n"]}
            self.last_report["seconds"] = seconds
            await self.send("rep.sent", self.last_report)
        elif kind == "ctl.report" and self.last_report:
            await self.send("rep.sent", self.last_report)

    async def _sub_ctl(self, kind: str, cmd: dict[str, Any]) -> None:
        if kind == "ctl.run":
            self.run, self.count = cmd["run"], 0
        elif kind == "ctl.report":
            report = {"name": self.name, "run": self.run, "received": self.count}
            await self.send("rep.recv", {**report, "first": self.first, "last": self.last})

    async def on_data(self, msg: Msg) -> None:
        msgpack.unpackb(msg.data)
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.last = now
        self.count += 1

    async def _pings(self, cmd: dict[str, Any]) -> None:
        samples: list[float] = []
        ping = subject("rt.ping")
        for i in range(int(cmd["k"])):
            body = msgpack.packb({"s": i, "p": cmd["payload"]})
            sent_at = time.perf_counter()
            reply = await self.nc.request(ping, body, timeout=REQUEST_TIMEOUT)
            msgpack.unpackb(reply.data)
            samples.append(time.perf_counter() - sent_at)
        await self.send("rep.rtt", {"name": self.name, "run": cmd["run"], "samples": samples})

    async def on_ping(self, msg: Msg) -> None:
        await msg.respond(msgpack.packb(msgpack.unpackb(msg.data)))


async def serve(role: str, name: str, url: str, topics: list[str]) -> None:
    nc = await nats.connect(url, name=f"bench-raw-{name}")
    done = asyncio.Event()
    peer = Peer(nc, name, role, done)
    await nc.subscribe(subject("ctl.>"), cb=peer.on_ctl)
    if role == "sub":
        for topic in topics:
            await nc.subscribe(subject(topic), cb=peer.on_data)
    elif role == "ponger":
        await nc.subscribe(subject("rt.ping"), cb=peer.on_ping)
    await nc.flush()
    print("ready", flush=True)
    await done.wait()
    await nc.close()


def main(argv: list[str]) -> int:
    role, name, url, *topics = argv
    asyncio.run(serve(role, name, url, topics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
