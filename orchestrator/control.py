"""The control socket: how the CLI talks to a running supervisor.

Requests are msgpack maps `{"cmd": name, ...arguments}` sent by a DEALER to the supervisor's
ROUTER; every request gets exactly one reply `{"ok": bool, "error": str, "data": ...}`, possibly
much later (`restart` replies once the module runs again, `down` once everything has stopped).
A malformed request gets an error reply too, and a rate-limited warning in the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import zmq

from orchestrator.rundir import RunDir, process_stopped

log = logging.getLogger(__name__)

_SLICE_MS = 200
# Bytes of one request. The largest a client sends is the bridge's `bridge_reply`: another host's
# reply, which that host's bridge takes up to 16 MiB (`cluster.supervisor_link._MAX_REPLY`);
# `publish`'s data is one command-line argument (Linux caps those at 128 KiB). A larger request
# gets an error reply, unread.
MAX_REQUEST = 17 * 1024 * 1024
# Bytes of one message ZeroMQ takes at all: anything up to this still gets a reply, however wrong
# (a client never waits for nothing). ZeroMQ drops a larger one, and its connection, before it is
# in our memory: a 400 MB request took the supervisor to 0.8 GB.
MAX_FRAME = 64 * 1024 * 1024
# What msgpack may build of one request, checked as it reads: a 32 MB request of 32 million empty
# maps took 2.4 GB and 9 s of the loop. The largest legit ones: `publish`'s data (128 KiB of JSON:
# 64 Ki items at most), a `logs` reply of another host (10,000 lines), its `status` (~40 items a
# module).
REQUEST_LIMITS = {
    "max_bytes": MAX_REQUEST,
    "max_items": 500_000,  # all lists and maps together
    "max_array_len": 100_000,
    "max_map_len": 100_000,
    "max_str_len": MAX_REQUEST,
    "max_bin_len": MAX_REQUEST,
    "max_ext_len": 0,
}
# Messages queued per client, each way: a CLI has one request at a time and reads its reply. Past
# it, a reply is refused (a `logs` reply is up to 512 KB: four clients that pipelined 1100 and
# never read took the supervisor to 2.1 GB) and a client's further requests wait in the client.
HWM = 16
TURN_SECONDS = 0.02  # of the loop's turn spent on requests: 1500 pipelined `logs` took 2 s turns
_ERROR_MAX = 4000  # characters of an error reply: a huge argument quoted back is cut
_REASON_MAX = 120  # characters of a decoding error in a reply or a log line
_DRAIN_BATCH = 500  # messages read from one socket per turn: a flood must not starve the rest
Handler = Callable[[bytes, dict[str, Any]], None]  # handle(identity, message)
Answer = Callable[[bytes, dict[str, Any]], object]  # answer(identity, reply)


class NotRunningError(RuntimeError):
    """No supervisor is running for that config."""


class ControlError(RuntimeError):
    """The supervisor answered that the request failed, or did not answer in time."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


def encode(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message)  # type: ignore[no-any-return]


def decode(payload: bytes, limits: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Decode one request or reply; raise ValueError if it is not a msgpack map (or exceeds
    `limits`: `max_bytes`, its size, checked first; msgpack's max_array_len and the like, checked
    before anything is built; and `max_items`, the lists' and maps' items in all, checked as each
    is built: nesting would otherwise multiply the per-container bounds)."""
    if not payload:
        raise ValueError("empty message; expected a msgpack map")
    options: dict[str, Any] = dict(limits or {})
    if (max_bytes := options.pop("max_bytes", None)) is not None and len(payload) > max_bytes:
        raise ValueError(f"too large: {len(payload)} bytes, at most {max_bytes}")
    if (max_items := options.pop("max_items", None)) is not None:
        items = 0

        def counted(container: Any) -> Any:
            nonlocal items
            items += len(container)
            if items > max_items:
                raise ValueError(f"more than {max_items} items in all")
            return container

        options["list_hook"] = options["object_hook"] = counted
    try:
        message = msgpack.unpackb(payload, raw=False, **options)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:_REASON_MAX] if str(exc) else type(exc).__name__
        raise ValueError(f"not a msgpack message ({reason})") from None
    if not isinstance(message, dict):
        raise ValueError(f"expected a msgpack map, got {type(message).__name__}")
    return message


def unpack(frames: list[bytes], limits: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The message in `[identity, payload]`, as a ROUTER receives one from a DEALER; raise
    ValueError saying what is wrong with it otherwise."""
    if len(frames) != 2:
        raise ValueError(f"expected one frame holding a msgpack map, got {len(frames) - 1}")
    return decode(frames[1], limits)


def reply(data: Any = None) -> dict[str, Any]:
    """A successful reply."""
    return {"ok": True, "data": data}


def failure(error: str, data: Any = None) -> dict[str, Any]:
    """A failed reply (an error of more than a few thousand characters is cut)."""
    if len(error) > _ERROR_MAX:
        error = error[:_ERROR_MAX] + "... (cut)"
    return {"ok": False, "error": error, "data": data}


class MalformedLog:
    """Warnings about malformed messages on one socket, rate-limited so that a flood costs the log
    a few lines: the first in full, then at most one line per `interval` seconds with the count
    of those ignored since (`flush()` writes it once due, or at once with `force`)."""

    def __init__(self, what: str, interval: float = 60.0) -> None:
        self.what = what  # "control request", say
        self.interval = interval
        self.count = 0  # counted since the last line
        self._last_reason = ""
        self._since = 0.0  # unix time of the first one counted
        self._logged_at: float | None = None  # monotonic

    def add(self, reason: str) -> None:
        """One more malformed message, and what was wrong with it."""
        now = time.monotonic()
        due = self._logged_at is None or now - self._logged_at >= self.interval
        if due and not self.count:
            self._logged_at = now
            log.warning(
                "ignored a malformed %s: %s (more are counted, logged at most every %gs)",
                self.what,
                reason,
                self.interval,
            )
            return
        if not self.count:
            self._since = time.time()
        self.count += 1
        self._last_reason = reason
        self.flush(now)

    def flush(self, now: float | None = None, *, force: bool = False) -> None:
        """Log how many were counted since the last line, if any and if due (or `force`)."""
        now = time.monotonic() if now is None else now
        if not self.count or self._logged_at is None:
            return
        if force or now - self._logged_at >= self.interval:
            log.warning(
                "ignored %d more malformed %ss since %s (the last: %s)",
                self.count,
                self.what,
                time.strftime("%H:%M:%S", time.localtime(self._since)),
                self._last_reason,
            )
            self.count, self._logged_at = 0, now


class Inbox:
    """The messages a ROUTER socket (the control socket, the child channel) receives, read a
    batch per loop turn and handed to `handle(identity, message)`. A malformed one is logged,
    rate-limited, and answered with an error through `answer` when there is one."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        what: str,
        answer: Answer | None,
        *,
        limits: Mapping[str, int] | None = None,
        turn_bytes: int | None = None,
        turn_seconds: float | None = None,
    ) -> None:
        """`limits`: msgpack's, for each message (see `decode`); `turn_bytes` and `turn_seconds`: bytes read and time spent handling
        per turn at most (with the batch's count: a flood of large or slow messages must not
        hold the loop either; ZeroMQ keeps the rest for the next turn)."""
        self.sock = sock
        self.malformed = MalformedLog(what)
        self._answer = answer
        self._limits = limits
        self._turn_bytes = turn_bytes
        self._turn_seconds = turn_seconds

    def drain(self, handle: Handler) -> None:
        """Handle what is queued, up to a batch (the poller reports the rest next turn)."""
        taken = 0
        started = time.monotonic()
        for _ in range(_DRAIN_BATCH):
            if self._turn_bytes is not None and taken >= self._turn_bytes:
                return
            if self._turn_seconds is not None and time.monotonic() - started >= self._turn_seconds:
                return
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            taken += sum(map(len, frames))
            try:
                message = unpack(frames, self._limits)
            except ValueError as exc:
                self.malformed.add(str(exc))
                if self._answer is not None and len(frames) > 1:  # frames[0]: who sent it
                    self._answer(frames[0], failure(f"malformed request: {exc}"))
                continue
            try:
                handle(frames[0], message)
            except Exception:  # one bad message must not take down every module
                log.exception("error while handling %.60r", message.get("cmd", message.get("kind")))
                if self._answer is not None:
                    self._answer(frames[0], failure("internal error; see logs/app.log"))


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
                    stopped = self.pid is not None and process_stopped(self.pid)
                    hint = (
                        f" (it is stopped: `kill -CONT {self.pid}` resumes it)" if stopped else ""
                    )
                    raise ControlError(
                        f"the supervisor (pid {self.pid}) did not answer within {wait:g}s{hint}",
                        {"kind": "timeout"},
                    )
            payload = sock.recv()
        finally:
            sock.close()
        try:
            answer = decode(payload)
        except ValueError as exc:  # another version's supervisor, or not one at all
            raise ControlError(
                f"malformed reply from the supervisor (pid {self.pid}): {exc}"
            ) from None
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error", "request failed")), answer.get("data"))
        return answer.get("data")


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (a zombie, dead but not yet reaped, is not)."""
    import psutil  # noqa: PLC0415  (~20 ms and 2 MB: only `down` waits on a pid)

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
