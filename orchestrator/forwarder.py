"""Requests for other hosts of the cluster, handed by the supervisor to its bridge.

The supervisor never talks to NATS itself: `restart HOST/NAME`, `logs HOST/NAME` and `status
--cluster` go from the CLI to the supervisor (its control socket, as every command), which hands
them to the bridge's attached link (`bridge_attach`, proven with `key`) and answers the CLI when
the bridge replies (`bridge_reply`), when the bridge goes away, or at a deadline. Nothing here
waits: the loop checks each pending request after every turn (see `Supervisor.wait_for`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from orchestrator import control

log = logging.getLogger(__name__)

MAX_PENDING = 256  # forwarded requests waiting at once; past it, new ones are refused
SLACK = 10.0  # seconds past a request's own wait before the supervisor gives up on the bridge
Send = Callable[[bytes, dict[str, Any]], bool]  # False: not taken (the link left, or is full)
BridgePid = Callable[[], int | None]  # the running bridge's pid, or None without one


class Forwarder:
    """The bridge's link, and the requests forwarded to it that still wait for an answer."""

    def __init__(self, send: Send, bridge_pid: BridgePid) -> None:
        # in the bridge's settings, never on a command line. os.urandom, as secrets.token_hex:
        # the secrets and hmac modules load OpenSSL (~3.5 MB of RSS) into every supervisor.
        self.key = os.urandom(16).hex()
        self._send = send
        self._bridge_pid = bridge_pid
        self._link: bytes | None = None
        self._link_pid: int | None = None  # the bridge process that attached
        self._next = 0
        self._answers: dict[int, dict[str, Any] | None] = {}

    def attach(self, identity: bytes, key: object) -> bool:
        """The bridge's link asks to attach; True if `key` proves it is our bridge."""
        if not isinstance(key, str) or not _same(key, self.key):
            return False
        self._link, self._link_pid = identity, self._bridge_pid()
        return True

    def answered(self, key: object, forward: object, reply: object) -> bool:
        """The bridge's reply to forward number `forward`; False if it is not a valid one."""
        if not isinstance(key, str) or not _same(key, self.key):
            return False
        if not isinstance(forward, int) or forward not in self._answers:
            return False  # answered too late: the CLI was told already
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            reply = control.failure("the bridge's reply was malformed")
        self._answers[forward] = reply
        return True

    def forward(
        self, host: str | None, request: dict[str, Any] | None, wait: float
    ) -> Callable[[], dict[str, Any] | None] | dict[str, Any]:
        """Hand a request (for `host`, or for the cluster's view if None) to the bridge. Returns
        a waiter (for `Supervisor.wait_for`), or a failed reply at once."""
        if self._link is None or self._link_pid != self._bridge_pid() or self._link_pid is None:
            return control.failure(
                "the bridge is not running or not ready yet (see `orchestrator status`)",
                {"kind": "unreachable"},
            )
        if len(self._answers) >= MAX_PENDING:
            return control.failure(f"{MAX_PENDING} requests to other hosts are already waiting")
        self._next += 1
        number = self._next
        message = {"forward": number, "host": host, "request": request, "wait": wait}
        if not self._send(self._link, message):
            return control.failure(
                "the bridge is not taking requests now (see `orchestrator status`); try again",
                {"kind": "unreachable"},
            )
        self._answers[number] = None
        deadline = time.monotonic() + wait + SLACK
        pid = self._link_pid

        def answer() -> dict[str, Any] | None:
            reply = self._answers.get(number)
            if reply is not None:
                del self._answers[number]
                return reply
            gone = self._bridge_pid() != pid
            if gone or time.monotonic() > deadline:
                del self._answers[number]
                why = "the bridge restarted" if gone else "the bridge did not answer in time"
                return control.failure(f"{why}; try again", {"kind": "unreachable"})
            return None

        return answer


def _same(given: str, key: str) -> bool:
    """`hmac.compare_digest`, imported only when a bridge (cluster mode) presents a key."""
    import hmac  # noqa: PLC0415

    return hmac.compare_digest(given, key)
