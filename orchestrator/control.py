"""The control socket: how the CLI talks to a running supervisor.

Requests are msgpack maps `{"cmd": name, ...arguments}` sent by a DEALER to the supervisor's
ROUTER; every request gets exactly one reply `{"ok": bool, "error": str, "data": ...}`, possibly
much later (`restart` replies once the module runs again, `down` once everything has stopped).
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgpack
import psutil
import zmq

from orchestrator.rundir import RunDir

_SLICE_MS = 200


class NotRunningError(RuntimeError):
    """No supervisor is running for that config."""


class ControlError(RuntimeError):
    """The supervisor answered that the request failed, or did not answer in time."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message)  # type: ignore[no-any-return]


def decode(payload: bytes) -> dict[str, Any]:
    """Decode one request or reply; raise ValueError if it is not a msgpack map."""
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception as exc:
        raise ValueError(f"not a msgpack message: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("not a msgpack map")
    return message


def reply(data: Any = None) -> dict[str, Any]:
    """A successful reply."""
    return {"ok": True, "data": data}


def failure(error: str, data: Any = None) -> dict[str, Any]:
    """A failed reply."""
    return {"ok": False, "error": error, "data": data}


class ControlClient:
    """Sends requests to the supervisor of one run directory."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.pid = run_dir.running_pid()
        if self.pid is None:
            raise NotRunningError("no supervisor is running for this config")

    def request(self, cmd: str, wait: float = 10.0, **arguments: Any) -> Any:
        """Send one request and return the reply's data; raise ControlError if it failed or no
        answer came within `wait` seconds, NotRunningError if the supervisor went away."""
        if not math.isfinite(wait) or wait < 0:
            raise ControlError(f"invalid wait {wait!r}: expected a number of seconds >= 0")
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.run_dir.control)
            sock.send(encode({"cmd": cmd, **arguments}))
            deadline = time.monotonic() + wait
            # Wait in slices, so that a supervisor that dies meanwhile is noticed at once.
            while not sock.poll(_SLICE_MS, zmq.POLLIN):
                if self.run_dir.running_pid() is None:
                    raise NotRunningError("the supervisor stopped before it answered")
                if time.monotonic() >= deadline:
                    raise ControlError(
                        f"the supervisor (pid {self.pid}) did not answer within {wait:g}s"
                    )
            answer = decode(sock.recv())
        finally:
            sock.close()
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error", "request failed")), answer.get("data"))
        return answer.get("data")


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (a zombie, dead but not yet reaped, is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
