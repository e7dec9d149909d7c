"""The bridge's side of its supervisor's control socket (the ipc socket the CLI uses too).

The bridge asks its supervisor for the status it announces and carries out, as the CLI would,
the requests other hosts send this one; each such request has a DEALER of its own, so replies
need no matching. One more DEALER stays *attached* (`bridge_attach`, proven with the key the
supervisor put in the bridge's settings): through it the supervisor hands over what the CLI
asks of other hosts (`{"forward": id, ...}`), and the bridge answers each with `bridge_reply`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from orchestrator.control import REQUEST_LIMITS, decode

log = logging.getLogger(__name__)

ATTACH_RETRY = 1.0  # seconds between attempts to attach, while the supervisor does not answer
_MAX_REPLY = 16 * 1024 * 1024  # bytes of one reply from the supervisor
Forwarded = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


def failure(error: str, kind: str | None = None) -> dict[str, Any]:
    """A failed control reply, as the supervisor's (`kind` tells the CLI its exit code)."""
    return {"ok": False, "error": error, "data": {"kind": kind} if kind else None}


class SupervisorLink:
    """Requests to the supervisor at `endpoint`, and the forwards it hands this bridge."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, key: str) -> None:
        self._context = context
        self._endpoint = endpoint
        self._key = key

    def _socket(self) -> zmq.asyncio.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, _MAX_REPLY)
        sock.connect(self._endpoint)
        return sock

    async def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The supervisor's reply (`{"ok": ..., "data"/"error": ...}`) to `request`, or a failed
        one if it does not answer within `timeout` seconds."""
        return await self._exchange(msgpack.packb(request), timeout)

    async def _exchange(self, payload: bytes, timeout: float) -> dict[str, Any]:
        sock = self._socket()
        try:
            await sock.send(payload)
            if not await sock.poll(int(timeout * 1000)):
                return failure(f"the supervisor did not answer within {timeout:g}s")
            answer = msgpack.unpackb(await sock.recv(), raw=False)
        except (ValueError, msgpack.UnpackException, zmq.ZMQError) as exc:
            return failure(f"the supervisor's answer was unreadable: {exc}")
        finally:
            sock.close(0)
        return answer if isinstance(answer, dict) else failure("the supervisor's answer was odd")

    async def reply(self, forward: int, answer: dict[str, Any], what: str = "the answer") -> None:
        """Hand the answer to a forwarded request back to the supervisor. One its control socket
        would not take (over its limits) goes as a failure saying so: the supervisor drops what
        it cannot read, and the CLI would only hear, later, that it did not answer."""
        request = {"cmd": "bridge_reply", "key": self._key, "id": forward, "reply": answer}
        payload = msgpack.packb(request)
        try:
            decode(payload, REQUEST_LIMITS)  # as the supervisor will
        except ValueError as exc:
            error = f"{what} is too large for the supervisor's control socket ({exc})"
            log.error("bridge: %s", error)
            payload = msgpack.packb({**request, "reply": failure(error)})
        await self._exchange(payload, 5.0)

    async def serve_forwards(self, handle: Forwarded) -> None:
        """Attach, then hand each forward to `handle` (in a task of its own) until cancelled."""
        tasks: set[asyncio.Task[None]] = set()
        while True:
            sock = self._socket()
            try:
                await sock.send(msgpack.packb({"cmd": "bridge_attach", "key": self._key}))
                if not await sock.poll(int(ATTACH_RETRY * 1000 * 5)):
                    continue  # not answering yet (the supervisor is busy): attach again
                answer = msgpack.unpackb(await sock.recv(), raw=False)
                if not (isinstance(answer, dict) and answer.get("ok")):
                    log.error("bridge: the supervisor refused to attach it: %s", answer)
                    await asyncio.sleep(ATTACH_RETRY)
                    continue
                while True:
                    message = msgpack.unpackb(await sock.recv(), raw=False)
                    if isinstance(message, dict) and isinstance(message.get("forward"), int):
                        task = asyncio.create_task(handle(message))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
            except (ValueError, msgpack.UnpackException, zmq.ZMQError) as exc:
                log.warning("bridge: the link to the supervisor failed (%s); attaching again", exc)
                await asyncio.sleep(ATTACH_RETRY)
            finally:
                sock.close(0)
