"""What a module or a raw peer can send on the bus, against a running system (issue 10, cases 1, 8
and 9): bad frames are counted and never delivered, a subscription libzmq cannot take is refused at
the call, an event the broker would refuse raises at publish(), and losses show, bounded."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from helpers import wait_until
from project import Project

from module_sdk.codec import encode_envelope
from module_sdk.event import validate_event_type


@pytest.fixture
def raw_pub() -> Iterator[Any]:
    """A factory of plain PUB sockets, as a non-SDK peer has; closed after the test."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()

    def connect(endpoint: str) -> zmq.Socket[bytes]:
        sock = context.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        return sock

    yield connect
    context.destroy(linger=0)


def _recorder(project: Project, name: str = "recorder", **config: Any) -> dict[str, Any]:
    config.setdefault("record", str(project.record_file))
    return {"name": name, "path": project.probe("recorder"), "config": config}


def _envelope(time_: float = 1.0, data: Any = None, seq: int = 0, event_id: str = "raw-1") -> bytes:
    return encode_envelope("raw", event_id, time_, data, seq)


def _bad_frames() -> list[tuple[str, list[bytes]]]:
    """One of each kind of frame that must never reach a callback, with why."""
    now = time.time()
    bomb_count = 4_000_000
    bomb = b"\x95\xa3raw\xa5raw-2\xcb" + bytes(8)  # [source, id, time, data, seq] by hand:
    bomb += b"\xdd" + bomb_count.to_bytes(4, "big") + b"\x90" * bomb_count + b"\x00"
    return [
        ("empty type", [b"", _envelope()]),
        ("dotless type", [b"ping", _envelope()]),
        ("the SDK's internal namespace", [b"\x00evil.x", _envelope()]),
        ("control character", [b"raw.a\x01b", _envelope()]),
        ("306-character type", [("a." + "b" * 304).encode(), _envelope()]),
        ("ext type", [b"raw.ext", _envelope(data={"x": msgpack.ExtType(5, b"xy")})]),
        ("timestamp", [b"raw.ts", _envelope(data=[msgpack.Timestamp(1, 0)])]),
        ("NaN time", [b"raw.nan", _envelope(time_=float("nan"))]),
        ("-inf time", [b"raw.inf", _envelope(time_=-float("inf"))]),
        ("4 MB of empty arrays", [b"raw.bomb", bomb]),
        ("forged seq", [b"raw.seq", _envelope(now, seq=10**18, event_id="forge-2")]),
        ("forged sync", [b"raw.seq\x00", msgpack.packb(["forge-", 10**18, now])]),
        ("malformed sync", [b"raw.seq\x00", b"\xc1"]),
    ]


def test_bad_frames_from_a_raw_peer_are_counted_and_never_delivered(
    project: Project, raw_pub: Any
) -> None:
    project.configure([_recorder(project, patterns=["*"])])
    bus = project.up()["bus"]
    raw = raw_pub(bus["xsub"])

    def hello() -> bool:  # until the raw socket knows the recorder's subscription
        raw.send_multipart([b"raw.hello", _envelope()])
        return any(r["type"] == "raw.hello" for r in project.recorded())

    wait_until(hello, 15, "the raw peer connected")
    raw.send_multipart([b"raw.seq", _envelope(time.time(), seq=1, event_id="forge-1")])
    bad = _bad_frames()
    for _, frames in bad:
        raw.send_multipart(frames)
    raw.send_multipart([b"\x00probe.0123", b""])  # another module's handshake: ignored
    raw.send_multipart([b"raw.after", _envelope()])
    wait_until(
        lambda: any(r["type"] == "raw.after" for r in project.recorded()),
        30,
        "the event after the bad frames",
        lambda: project.log("recorder"),
    )
    row = project.wait_module("recorder", bad_frames=len(bad))
    assert row["state"] == "running" and row["dropped"] == 0 and row["callback_errors"] == 0
    raw_types = [r["type"] for r in project.recorded() if r["source"] == "raw"]
    assert set(raw_types) == {"raw.hello", "raw.seq", "raw.after"}, raw_types
    assert raw_types.count("raw.seq") == 1  # seq 1, not the forged one
    for record in project.recorded():
        validate_event_type(record["type"])  # nothing else reached the callback either
    assert "dropped a bad frame on the bus" in project.log("recorder")


GREEDY = """
import json

from module_sdk import Event, EventBus

_out = ""


def initialize(event_bus: EventBus, config: dict) -> None:
    global _out
    _out = config["out"]
    try:
        event_bus.subscribe("a." + "b" * 200_000, lambda event: None)
        outcome = "accepted"
    except ValueError as exc:
        outcome = f"ValueError: {exc}"
    try:
        event_bus.publish("big.one", "x" * 100_000)
        published = "returned"
    except ValueError as exc:
        published = f"ValueError: {exc}"
    event_bus.publish("big.after", "small")
    with open(_out, "w", encoding="utf-8") as sink:
        json.dump({"subscribe": outcome, "publish": published}, sink)


def shutdown() -> None:
    pass
"""


def test_a_long_subscription_and_an_oversize_event_raise_at_the_call(project: Project) -> None:
    """A 200,000-character subscription crashed libzmq in the broker and every module; an event
    over the bus's max message size vanished (the broker closed the connection)."""
    out = project.root / "greedy.json"
    project.configure(
        [
            _recorder(project, patterns=["big.*"]),
            {
                "name": "greedy",
                "path": project.write_module("greedy.py", GREEDY),
                "config": {"out": str(out)},
                "depends_on": ["recorder"],
            },
        ],
        bus={"max_message_size_mb": 0.0625},  # 65,536 bytes, the least allowed
    )
    project.up()
    outcome = wait_until(lambda: out.exists() and out.read_text(), 15, "greedy's outcome")
    assert "over the limit of 255 characters" in outcome and "200002 characters" in outcome
    assert "over the bus's max_message_size of 65536 bytes" in outcome
    wait_until(
        lambda: [r["type"] for r in project.recorded()] == ["big.after"],
        15,
        "the small event after the oversize one, alone",
        lambda: str(project.recorded()),
    )
    assert project.module("greedy")["events_out"] == 1
    result = project.cli("events", "a." + "b" * 130_000, "--timeout", "1")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "over the limit of 255 characters" in result.stderr
    assert "Traceback" not in result.stderr
    big = project.cli("publish", "big.cli", '"' + "x" * 100_000 + '"')
    assert big.returncode == 1 and "max_message_size" in big.stderr, big.stderr
    project.cli("publish", "big.cli", '"small"', check=0)  # the bus works on
    wait_until(lambda: len(project.recorded()) == 2, 15, "the small CLI event")
    status = project.status()
    assert all(m["state"] == "running" and m["restarts"] == 0 for m in status["modules"]), status


BURST = """
import threading

from module_sdk import EventBus


def burst(event_bus: EventBus) -> None:
    for n in range(20_000):  # far more than the high-water marks on the way hold; then quiet
        event_bus.publish("burst.data", n)


def initialize(event_bus: EventBus, config: dict) -> None:
    threading.Thread(target=burst, args=(event_bus,), daemon=True).start()


def shutdown() -> None:
    pass
"""

SLOW = """
import time

from module_sdk import Event, EventBus


def slow(event: Event) -> None:
    if event.type != "burst.data":  # a sync must never reach a callback
        raise AssertionError(f"got {event.type!r}")
    time.sleep(0.001)


def initialize(event_bus: EventBus, config: dict) -> None:
    event_bus.subscribe("burst.*", slow)


def shutdown() -> None:
    pass
"""


def test_drops_at_the_end_of_a_burst_show_without_a_later_event(project: Project) -> None:
    project.configure(
        [
            {"name": "slow", "path": project.write_module("slow.py", SLOW)},
            {
                "name": "burst",
                "path": project.write_module("burst.py", BURST),
                "depends_on": ["slow"],  # subscribed before the first event goes out
            },
        ],
        bus={"high_water_mark": 1000},
    )
    project.up()
    row = wait_until(
        lambda: (m := project.module("slow"))["events_in"] + m["dropped"] == 20_000 and m,
        30,
        "every event of the burst delivered or counted as dropped",
        lambda: str(project.module("slow")),
    )
    assert row["dropped"] > 0 and row["bad_frames"] == 0 and row["callback_errors"] == 0, row
    assert project.module("burst")["events_out"] == 20_000


def test_a_config_too_large_for_the_bus_cuts_module_loaded_not_the_supervisor(
    project: Project,
) -> None:
    """`module.loaded` carries the module's config: one over the bus's max message size raised
    into the supervisor's loop, cutting its handling of `ready` short: a module depending on
    it waited for ever."""
    project.configure(
        [
            _recorder(project, patterns=["module.loaded"]),
            {
                "name": "large",
                "path": project.probe("idle"),
                "config": {"blob": "x" * 100_000},
                "depends_on": ["recorder"],
            },
            {"name": "after", "path": project.probe("idle"), "depends_on": ["large"]},
        ],
        bus={"max_message_size_mb": 0.0625},
    )
    status = project.up()
    assert all(m["state"] == "running" for m in status["modules"]), status
    loaded = wait_until(
        lambda: [r for r in project.recorded() if r["data"].get("name") == "large"],
        15,
        "module.loaded of the large module",
    )
    assert loaded[0]["data"]["config"].startswith("<cut: "), loaded
    assert "module.loaded' is" in project.log("app") and "config cut" in project.log("app")
