"""The raw pyzmq baseline of the bus benchmarks: the code a user would write by hand.

`python -m bench.raw_peer ROLE NAME XSUB XPUB [TOPIC...]`, ROLE one of proxy, pub, sub, pinger,
ponger. Every peer is one process with a PUB socket connected to the proxy's XSUB and a SUB socket
connected to its XPUB, `msgpack.packb` + `send_multipart` out and `recv_multipart` +
`msgpack.unpackb` in, and speaks the same control protocol as the SDK bench modules in
bench/modules (ctl.hello, ctl.run, ctl.report, ctl.ping, ctl.exit; rep.* answers). High-water marks match the
SDK's default (100 000) so that both sides buffer alike.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import msgpack
import zmq

HWM = 100_000
_CTL = b"ctl."


def _connect(
    context: zmq.Context[zmq.Socket[bytes]], xsub: str, xpub: str, topics: list[bytes]
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    pub.connect(xsub)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.connect(xpub)
    for topic in topics:
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    return pub, sub


def proxy(xsub_endpoint: str, xpub_endpoint: str) -> None:
    """`zmq.proxy` between an XSUB and an XPUB socket, until killed."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub = context.socket(zmq.XSUB)
    xpub = context.socket(zmq.XPUB)
    for sock in (xsub, xpub):
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
    xsub.bind(xsub_endpoint)
    xpub.bind(xpub_endpoint)
    print("ready", flush=True)
    zmq.proxy(xsub, xpub)


def publisher(name: str, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
    send, packb, unpackb = pub.send_multipart, msgpack.packb, msgpack.unpackb
    last_report: dict[str, Any] = {}
    while True:
        topic, body = sub.recv_multipart()
        cmd: dict[str, Any] = unpackb(body)
        if topic == b"ctl.run":
            run, n, payload = cmd["run"], cmd["n"], cmd["payload"]
            data_topic = cmd["topic"].encode()
            start = time.perf_counter()
            for i in range(n):
                send([data_topic, packb({"s": i, "p": payload})])
            seconds = time.perf_counter() - start
            last_report = {"name": name, "run": run, "sent": n, "seconds": seconds}
            send([b"rep.sent", packb(last_report)])
        elif topic == b"ctl.report" and last_report:
            send([b"rep.sent", packb(last_report)])
        elif topic == b"ctl.hello":
            send([b"rep.hello", packb({"name": name})])
        elif topic == b"ctl.exit":
            return


def subscriber(
    name: str, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], topics: list[bytes]
) -> None:
    send, packb, unpackb = pub.send_multipart, msgpack.packb, msgpack.unpackb
    data_topics = set(topics)
    run, count, first, last = "", 0, 0.0, 0.0
    while True:
        topic, body = sub.recv_multipart()
        data = unpackb(body)
        if topic in data_topics:
            now = time.perf_counter()
            if not count:
                first = now
            last = now
            count += 1
        elif topic == b"ctl.run":
            run, count = data["run"], 0
        elif topic == b"ctl.report":
            report = {"name": name, "run": run, "received": count, "first": first, "last": last}
            send([b"rep.recv", packb(report)])
        elif topic == b"ctl.hello":
            send([b"rep.hello", packb({"name": name})])
        elif topic == b"ctl.exit":
            return


def pinger(name: str, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
    send, packb, unpackb = pub.send_multipart, msgpack.packb, msgpack.unpackb
    run, k, payload, samples, sent_at = "", 0, "", [], 0.0
    while True:
        topic, body = sub.recv_multipart()
        data = unpackb(body)
        if topic == b"rt.pong":
            samples.append(time.perf_counter() - sent_at)
            if len(samples) < k:
                sent_at = time.perf_counter()
                send([b"rt.ping", packb({"s": len(samples), "p": payload})])
            else:
                send([b"rep.rtt", packb({"name": name, "run": run, "samples": samples})])
        elif topic == b"ctl.ping":
            run, k, payload, samples = data["run"], data["k"], data["payload"], []
            sent_at = time.perf_counter()
            send([b"rt.ping", packb({"s": 0, "p": payload})])
        elif topic == b"ctl.hello":
            send([b"rep.hello", packb({"name": name})])
        elif topic == b"ctl.exit":
            return


def ponger(name: str, pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
    send, packb, unpackb = pub.send_multipart, msgpack.packb, msgpack.unpackb
    while True:
        topic, body = sub.recv_multipart()
        data = unpackb(body)
        if topic == b"rt.ping":
            send([b"rt.pong", packb(data)])
        elif topic == b"ctl.hello":
            send([b"rep.hello", packb({"name": name})])
        elif topic == b"ctl.exit":
            return


def main(argv: list[str]) -> int:
    role, name, xsub, xpub, *rest = argv
    if role == "proxy":
        proxy(xsub, xpub)
        return 0
    topics = [t.encode() for t in rest]
    subscriptions = {
        "pub": [_CTL],
        "sub": [_CTL, *topics],
        "pinger": [_CTL, b"rt.pong"],
        "ponger": [_CTL, b"rt.ping"],
    }[role]
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub, sub = _connect(context, xsub, xpub, subscriptions)
    if role == "pub":
        publisher(name, pub, sub)
    elif role == "sub":
        subscriber(name, pub, sub, topics)
    elif role == "pinger":
        pinger(name, pub, sub)
    else:
        ponger(name, pub, sub)
    context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
