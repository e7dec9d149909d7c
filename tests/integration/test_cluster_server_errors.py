"""Errors a NATS server answers with, and closes the connection for: nats-py then closes its client
for good, so the bridge must not send what a server refuses, and must end (to be restarted,
saying why) when a server closes it all the same."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import zmq
from cluster_hosts import bridge, configure, wait_connected
from helpers import wait_until
from nats_server import NatsServer
from project import Project


def test_a_server_error_restarts_the_bridge_which_says_why(
    project: Project, tmp_path: Path
) -> None:
    """A server whose control lines are shorter than a subject the bridge may send (its
    `max_control_line`, or expired credentials, close the connection as well): status said
    `nats disconnected: closed` for good, 0 restarts, and every later event was unsent."""
    conf = tmp_path / "nats.conf"
    conf.write_text("max_control_line: 256\n")  # subjects of 330 characters may leave
    node = NatsServer(tmp_path / "nats.log", "-c", str(conf))
    try:
        configure(project, "alpha", {"servers": [node.url]})
        project.up()
        wait_connected(project)
        # A frame no SDK sends, of a topic that is no event type: dropped, counted, not sent.
        xsub = next(path for path in project.socket_files() if path.name == "xsub.sock")
        context = zmq.Context()
        pub = context.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.connect(f"ipc://{xsub}")
        envelope = msgpack.packb(["raw", "55-raw-1", time.time(), {}, 0])

        def dropped() -> int:
            pub.send_multipart([b"x." + b"z" * 5000, envelope])  # again: until PUB connects
            return int(bridge(project)["bad"])

        try:
            wait_until(dropped, 15, "the long topic counted as bad")
        finally:
            pub.close()
            context.term()
        row = bridge(project)
        assert row["nats"].startswith("connected") and row["restarts"] == 0, row
        # A valid type of 255 characters, which this server refuses, and closes for.
        project.cli("publish", "x." + "a" * 253, "{}", check=0)
        row = wait_until(
            lambda: (row := bridge(project))["restarts"] >= 1 and row,
            15,
            "the bridge restarted",
            lambda: project.log("app"),
        )
        assert "maximum control line exceeded" in row["last_exit"]["reason"], row
        wait_connected(project)  # and connected again
        line = project.cli("status", check=0).stdout
        assert "NATS closed the connection: maximum control line exceeded" in line, line
    finally:
        project.cli("down", check=None)
        node.stop()
