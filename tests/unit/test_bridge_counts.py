"""What the bridge drops is counted, and the counts reach `status`: the bridge's `counts:` line,
the supervisor's row of it, and the line `status` prints."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from test_bridge import Msg, _fake_frames, bridge  # noqa: F401  (an autouse fixture)

from module_sdk.codec import encode_envelope
from orchestrator.bridge_process import BridgeProcess
from orchestrator.cli.status import _system_line
from orchestrator.cluster.batch import BATCH_HEADER
from orchestrator.cluster.bridge_lines import COUNTS_PREFIX


def receive(b: Any, subject: str, data: bytes, count: str | None = None) -> None:
    msg = Msg(subject, data, "mallory")
    if count is not None:
        msg.headers[BATCH_HEADER] = count
    asyncio.run(b.receive(msg))


def supervisor_row(lines: list[str]) -> dict[str, Any]:
    """The bridge's row in `status --json` once the supervisor has read `lines` of it."""
    process = BridgeProcess.__new__(BridgeProcess)  # its line handling and row only
    process.counts = dict.fromkeys(("exported", "imported", "unsent", "refused", "bad"), 0)
    process._earlier = dict(process.counts)
    for line in lines:
        process.on_line(line)
    return {
        "name": "bridge",
        "state": "running",
        "pid": 5,
        "restarts": 0,
        "last_exit": None,
        "nats": "connected to nats://h:1",
        **process.totals(),
    }


def test_garbage_wrong_batches_and_forgeries_from_nats_show_in_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A sweep sent 100 each of garbage, batches whose Orch-Batch count was wrong and forged
    `host.lost` events: `status` showed none of it (README: "counted as refused")."""
    b, _, pub = bridge(local_prefix="1-abcdef-sup-")
    good = encode_envelope("shop", "7-ok-1", 1.0, {}, 1)
    forged = encode_envelope("orchestrator", "9-z-1", 1.0, {"host": "x"}, 1)
    for _ in range(3):
        receive(b, "prod.ev.x.g", b"\xc1garbage")
        receive(b, "prod.ev.x.g", msgpack.packb([b"a", b"b"]), count="3")
        receive(b, "prod.ev.host.lost", forged)
    receive(b, "prod.ev.x", good)  # no event type: `x` has no action
    receive(b, "prod.ev.x.g", msgpack.packb([good, b"\x01"]), count="2")  # one bad in a batch
    receive(b, "prod.ev.x.g", encode_envelope("orchestrator", "1-abcdef-sup-4", 1.0, {}, 4))
    assert len(pub.sent) == 1  # the good event of the batch
    assert (b.counts.refused, b.counts.bad, b.counts.imported) == (4, 8, 1)
    capsys.readouterr()
    b.counts.report()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{COUNTS_PREFIX}0 1 0 4 8"]
    row = supervisor_row(lines)
    assert (row["refused"], row["bad"]) == (4, 8)
    line = _system_line(row)
    assert "4 refused from NATS" in line and "8 malformed dropped" in line, line
    quiet = _system_line(supervisor_row([f"{COUNTS_PREFIX}3 2 0 0 0"]))
    assert "refused" not in quiet and "malformed" not in quiet, quiet


def test_the_first_bad_message_is_logged_and_a_flood_costs_the_log_a_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b, _, _ = bridge()
    for _ in range(1000):
        receive(b, "prod.ev.x.g", b"\xc1garbage")
    assert b.counts.bad == 1000
    said = [r.getMessage() for r in caplog.records if "malformed NATS message" in r.getMessage()]
    assert len(said) == 1 and "prod.ev.x.g" in said[0], said


@pytest.mark.parametrize("export", ["*", "x.*"])
def test_a_local_frame_whose_topic_is_no_event_type_never_reaches_nats(
    export: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame published on the bus by a ZeroMQ peer (not the SDK) with a topic of 5,000
    characters left as a subject over the server's max_control_line: the server closed the
    connection for it, and nats-py gave up on it for good."""
    b, nats, _ = bridge((export,))
    body = encode_envelope("raw", "55-raw-1", 1.0, {}, 0)
    longest = b"x." + b"a" * 253  # an event type of 255 characters: valid, it leaves
    bad = [b"x." + b"z" * 5000, b"x.a b", b"x.\xff\xfe", b"x.", b"x.a\n.b"]
    for topic in [*bad, longest, bad[0], b"x.z" + b"z" * 300 + b"\x00", b"\x00probe.x"]:
        asyncio.run(b.export(topic, body))
    sent = [(subject[:12], len(subject)) for subject, _, _ in nats.sent]  # short to read
    assert sent == [("prod.ev.x.aa", len("prod.ev.") + 255)]
    assert b.counts.bad == len(bad) + 2  # the first again (its route is remembered), a sync
    said = [r.getMessage() for r in caplog.records if "malformed local frame" in r.getMessage()]
    assert len(said) == 1 and "no valid event type" in said[0], said
