"""Control requests between hosts, sealed with the cluster's credentials.

NATS admits whoever holds *some* credential of its accounts (a monitoring user, say); the subject
`<name>.ctl.<host>` alone would let any of them restart this host's modules. So a request carries
an HMAC-SHA256 keyed by the credentials this host itself joins with (a token, a user and password,
or the contents of an NKey seed or `.creds` file): only a host configured with the same
credentials can control this one. A request also names its target host and the time it was sent,
and carries a random nonce: one sent to another host, older than `MAX_AGE` or seen before is
refused. Without credentials (a NATS server open to anyone) requests are not signed and any
client of the server can send them: the README says so.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack

MAX_AGE = 30.0  # seconds a request stays valid (clocks of hosts may differ by this much)
MAX_REQUEST = 64 * 1024  # bytes of a sealed request: they are small
_NONCES = 4096  # nonces remembered against replays (within MAX_AGE)
_CONTEXT = b"orchestrator cluster control v1\x00"


class RefusedError(ValueError):
    """A request this host does not execute, and why."""


def control_key(credentials: Mapping[str, str]) -> bytes | None:
    """The signing key of a host that joins NATS with `credentials` (BridgeSettings'), or None
    without any. Raises OSError if a credentials file cannot be read."""
    parts: list[bytes] = []
    for key in ("token", "user", "password"):
        if key in credentials:
            parts.append(f"{key}={credentials[key]}".encode())
    for key in ("nkey_seed", "creds"):
        if key in credentials:
            parts.append(key.encode() + b"=" + Path(credentials[key]).read_bytes().strip())
    if not parts:
        return None
    return hashlib.sha256(_CONTEXT + b"\x00".join(parts)).digest()


class Sealer:
    """Seals requests for other hosts and opens (verifies) those sent to this one."""

    def __init__(self, key: bytes | None, host: str) -> None:
        self._key = key
        self._host = host
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    @property
    def signed(self) -> bool:
        return self._key is not None

    def seal(self, target: str, request: Mapping[str, Any]) -> bytes:
        """`request` (a control request: `{"cmd": ..., ...}`) addressed to host `target`."""
        body: bytes = msgpack.packb(
            {
                "to": target,
                "from": self._host,
                "sent": time.time(),
                "nonce": os.urandom(12),
                "request": dict(request),
            }
        )
        return msgpack.packb([body, self._mac(body)])  # type: ignore[no-any-return]

    def open(self, data: bytes, now: float | None = None) -> tuple[str, dict[str, Any]]:
        """(sending host, request) of a sealed request; raises RefusedError saying why not."""
        if len(data) > MAX_REQUEST:
            raise RefusedError(f"request of {len(data)} bytes (at most {MAX_REQUEST})")
        try:
            body, mac = msgpack.unpackb(data, raw=False)
            message = msgpack.unpackb(body, raw=False)
        except Exception:  # anything at all: it is not a request of ours
            raise RefusedError("not a sealed control request") from None
        if not isinstance(body, bytes) or not isinstance(mac, bytes | None):
            raise RefusedError("not a sealed control request")
        expected = self._mac(body)
        if expected is not None and (mac is None or not hmac.compare_digest(mac, expected)):
            raise RefusedError("not signed with this cluster's credentials")
        if not isinstance(message, dict) or not isinstance(message.get("request"), dict):
            raise RefusedError("not a sealed control request")
        sender, sent, nonce = message.get("from"), message.get("sent"), message.get("nonce")
        if message.get("to") != self._host:
            raise RefusedError(f"addressed to {message.get('to')!r}, not to {self._host!r}")
        if not isinstance(sender, str) or not isinstance(nonce, bytes):
            raise RefusedError("not a sealed control request")
        now = time.time() if now is None else now
        if not isinstance(sent, int | float) or abs(now - sent) > MAX_AGE:
            raise RefusedError(
                f"sent at a time more than {MAX_AGE:g}s from this host's clock (stale or replayed,"
                " or the hosts' clocks differ)"
            )
        if nonce in self._seen:
            raise RefusedError("replayed")
        self._remember(nonce, now)
        return sender, message["request"]

    def _remember(self, nonce: bytes, now: float) -> None:
        self._seen[nonce] = now
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if len(self._seen) <= _NONCES and now - at <= MAX_AGE:
                break
            del self._seen[oldest]

    def _mac(self, body: bytes) -> bytes | None:
        if self._key is None:
            return None
        return hmac.new(self._key, body, hashlib.sha256).digest()
