"""Code upgraded on disk while a supervisor runs: a module process it spawns, or a fork server it
revives, imports the new module_sdk. The new side finds the running supervisor's protocol is
not its own and says so, naming the fix, instead of failing on a message it misreads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import zmq

from module_sdk import forkserver as template
from module_sdk import protocol
from orchestrator import fork_requests


def test_a_module_process_refuses_a_spec_from_a_supervisor_of_another_protocol(
    tmp_path: Path,
) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/child.sock"
    router.bind(endpoint)
    env = {
        **os.environ,
        protocol.ENV_MODULE: "m",
        protocol.ENV_CHANNEL: endpoint,
        protocol.ENV_CHANNEL_ID: "m:secret",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "module_sdk"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert router.poll(20_000), "no hello"
        identity, hello = router.recv_multipart()
        assert msgpack.unpackb(hello)["kind"] == protocol.HELLO
        spec = {"kind": protocol.SPEC, "protocol": protocol.VERSION + 1}
        router.send_multipart([identity, msgpack.packb(spec)])
        assert router.poll(20_000), "no error report"
        _, report = router.recv_multipart()
        error = msgpack.unpackb(report)
        assert error["kind"] == protocol.ERROR and error["stage"] == "load", error
        said = f"speaks protocol {protocol.VERSION + 1}"
        assert said in error["error"] and "orchestrator up" in error["error"], error
        assert child.wait(20) == protocol.EXIT_LOAD_FAILED
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
        router.close()
        context.term()


def test_a_fork_server_refuses_requests_of_another_protocol_and_serves_on() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    serving = threading.Thread(target=template.serve, args=(theirs,), daemon=True)
    serving.start()
    try:
        for version in (0, protocol.VERSION + 1, "1"):
            read_end, write_end = os.pipe()
            env = fork_requests.environment_file({})
            request = {"name": "m", "cwd": "/", "protocol": version}
            socket.send_fds(ours, [msgpack.packb(request)], [write_end, env])
            for fd in (write_end, env):
                os.close(fd)
            ours.settimeout(10)
            answer = msgpack.unpackb(ours.recv(4096))
            assert "restart it" in answer["error"], answer
            said = f"protocol {version}" if isinstance(version, int) else "an unknown protocol"
            assert said in answer["error"], answer
            assert os.read(read_end, 1) == b""  # it closed the pipe it was given
            os.close(read_end)
    finally:
        ours.close()
        serving.join(10)
        theirs.close()
    assert not serving.is_alive()


def test_a_supervisor_from_before_versions_speaks_version_1() -> None:
    """Its messages are version 1's: refusing them broke every upgrade from it (a review)."""
    assert protocol.VERSION == 1, "a new version: say here what an unversioned peer is"
    assert protocol.version_mismatch(None) is None
    assert protocol.version_mismatch(1) is None
