"""A bug in the broker's grouped-delivery thread: the broker process says so and exits non-zero
(the supervisor starts another), rather than forwarding on with grouped delivery dead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zmq
from helpers import wait_until

# The broker's own main, with a bug planted where a peer can reach it: a counters request.
_PLANTED = """
import os, sys
from broker.groups import GroupDispatcher
def stats(self):
    raise RuntimeError("planted bug")
GroupDispatcher.stats = stats
from broker.__main__ import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def test_the_broker_exits_non_zero_when_its_dispatcher_fails(tmp_path: Path) -> None:
    ep = {name: f"ipc://{tmp_path}/{name}.sock" for name in ("xsub", "xpub", "groups")}
    args = ["--xsub", ep["xsub"], "--xpub", ep["xpub"], "--groups", ep["groups"]]
    out = tmp_path / "broker.out"
    with open(out, "w") as sink:
        broker = subprocess.Popen(
            [sys.executable, "-c", _PLANTED, *args], stdout=sink, stderr=subprocess.STDOUT
        )
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        wait_until(lambda: "ready" in out.read_text(), 15.0, "the broker ready")
        asker = ctx.socket(zmq.DEALER)
        asker.setsockopt(zmq.LINGER, 0)
        asker.connect(ep["groups"])
        asker.send(b"S")
        wait_until(lambda: broker.poll() is not None, 10.0, "the broker gone")
        assert broker.returncode == 1
        text = out.read_text()
        assert "planted bug" in text and "grouped delivery stopped" in text
    finally:
        ctx.destroy(linger=0)
        if broker.poll() is None:
            broker.kill()
        broker.wait(10)
