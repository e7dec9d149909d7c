"""A broker process with grouped delivery, a client bus and member processes, for the tests of
grouped subscriptions (`test_groups`, `test_group_delivery`)."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import Recorder, wait_until

from module_sdk.bus import ZmqEventBus

MEMBER = Path(__file__).parent / "group_member.py"


class GroupNet:
    """A broker process, a client bus in this process (publisher and ungrouped subscriber of
    everything), and member processes started per test."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.xsub = f"ipc://{directory}/xsub.sock"
        self.xpub = f"ipc://{directory}/xpub.sock"
        self.groups = f"ipc://{directory}/groups.sock"
        self.broker_out = directory / "broker.out"
        self.start_broker()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.everything = Recorder()
        self.client = ZmqEventBus(self.ctx, "test", self.xsub, self.xpub)
        self.client.subscribe("*", self.everything)
        self.client.handshake(10.0)
        self.client.start()
        self.asker = self.raw()
        self.members: list[subprocess.Popen[str]] = []

    def start_broker(self) -> None:
        """Start the broker process (again) and wait until it says it is ready."""
        args = ["--xsub", self.xsub, "--xpub", self.xpub, "--groups", self.groups]
        with open(self.broker_out, "w") as out:  # a file: its stats lines never fill a pipe
            self.broker = subprocess.Popen(
                [sys.executable, "-m", "broker", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_until(lambda: "ready" in self.broker_out.read_text(), 15.0, "the broker ready")

    def raw(self) -> zmq.Socket[bytes]:
        """A DEALER on the groups socket, driven by hand."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.groups)
        return sock

    def member(
        self, name: str, group: str, pattern: str, where: Path, *, redeliver: bool = False
    ) -> subprocess.Popen[str]:
        """Start a member process and wait until the broker confirmed its join."""
        where.mkdir(exist_ok=True)
        args = [self.xsub, self.xpub, self.groups, name, group, pattern, "1" if redeliver else "0"]
        proc = subprocess.Popen(
            [sys.executable, str(MEMBER), *args, str(where)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.members.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        assert ready and proc.stdout.readline().strip() == "ready", f"member {name} not ready"
        return proc

    def stats(self, group: str | None = None) -> dict[str, Any]:
        """The broker's counters (of one group, if named), asked over the groups socket."""
        self.asker.send(b"S")
        deadline = time.monotonic() + 10.0
        while self.asker.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            frames = self.asker.recv_multipart()
            if frames[0] == b"S":
                stats: dict[str, Any] = json.loads(frames[1])
                if group is None:
                    return stats
                return next((g for g in stats["groups"] if g["group"] == group), {})
        pytest.fail("the broker did not answer a stats request")

    def close(self) -> None:
        for proc in self.members:
            proc.kill()
            proc.wait(10)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        self.client.close()
        self.ctx.destroy(linger=0)
        self.broker.terminate()
        try:
            self.broker.wait(10)
        except subprocess.TimeoutExpired:
            self.broker.kill()
            self.broker.wait(10)


@contextmanager
def group_net() -> Iterator[GroupNet]:
    """A `GroupNet` in a fresh directory (short, for ipc paths), closed and removed after."""
    directory = Path(tempfile.mkdtemp(prefix="groups-", dir="/tmp"))
    try:
        groups = GroupNet(directory)
        try:
            yield groups
        finally:
            groups.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
