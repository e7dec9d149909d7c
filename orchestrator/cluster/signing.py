"""Control requests (and their replies, and announcements) between hosts, sealed with the
cluster's credentials.

NATS admits whoever holds *some* credential of its accounts (a monitoring user, say); the subject
`<name>.ctl.<host>` alone would let any of them restart this host's modules. So a request carries
an HMAC-SHA256 keyed by the credentials this host itself joins with (a token, a user and password,
or the contents of an NKey seed or `.creds` file): only a host configured with the same
credentials can control this one. A request also names its target host and the time it was sent,
and carries a random nonce: one sent to another host, older than `MAX_AGE` or seen before is
refused, as is one sent before this host's bridge started. Replies carry the request's nonce and
are signed too, so no other NATS client can answer in a host's place; announcements are signed
likewise. Without credentials (a NATS server open to anyone) nothing is signed and any client of
the server can send them: the README says so.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack

MAX_AGE = 30.0  # seconds a request stays valid (clocks of hosts may differ by this much)
MAX_REQUEST = 64 * 1024  # bytes of a sealed request: they are small
_NONCES = 4096  # requests taken within MAX_AGE at most: each nonce is kept that long
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
    """Seals what this host sends other hosts (requests, replies, announcements) and opens what
    they send it. Without a key, nothing is signed and anything opens: NATS is open anyway."""

    def __init__(self, key: bytes | None, host: str, not_before: float | None = None) -> None:
        self._key = key
        self._host = host
        # Requests sent before this bridge started are refused: the nonces seen by the bridge
        # before it (a crash, a reload) are forgotten, and those requests could be replays.
        self._not_before = time.time() if not_before is None else not_before
        self._seen: dict[bytes, float] = {}  # nonce: when it may be forgotten

    @property
    def signed(self) -> bool:
        return self._key is not None

    # -- signing whatever ------------------------------------------------------------------------

    def sign(self, body: bytes) -> bytes:
        """`body` with its MAC (none without a key), as one msgpack array."""
        return msgpack.packb([body, self._mac(body)])  # type: ignore[no-any-return]

    def verify(self, data: bytes, limit: int = MAX_REQUEST) -> bytes:
        """The body of what `sign` made with this cluster's key; raises RefusedError."""
        if len(data) > limit:
            raise RefusedError(f"{len(data)} bytes (at most {limit})")
        try:
            body, mac = msgpack.unpackb(data, raw=False)
        except Exception:  # anything at all: it is not ours
            raise RefusedError("not a signed message of this cluster") from None
        if not isinstance(body, bytes) or not isinstance(mac, bytes | None):
            raise RefusedError("not a signed message of this cluster")
        expected = self._mac(body)
        if expected is not None and (mac is None or not hmac.compare_digest(mac, expected)):
            raise RefusedError("not signed with this cluster's credentials")
        return body

    # -- requests ----------------------------------------------------------------------------------

    def seal(self, target: str, request: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """`request` (a control request: `{"cmd": ..., ...}`) addressed to host `target`, and
        its nonce (the reply carries it back)."""
        nonce = os.urandom(12)
        body: bytes = msgpack.packb(
            {
                "to": target,
                "from": self._host,
                "sent": time.time(),
                "nonce": nonce,
                "request": dict(request),
            }
        )
        return self.sign(body), nonce

    def open(self, data: bytes, now: float | None = None) -> tuple[str, dict[str, Any], bytes]:
        """(sending host, request, nonce) of a sealed request; raises RefusedError saying why
        not."""
        body = self.verify(data)
        try:
            message = msgpack.unpackb(body, raw=False)
        except Exception:  # signed garbage: a bug on the other side
            raise RefusedError("not a sealed control request") from None
        if not isinstance(message, dict) or not isinstance(message.get("request"), dict):
            raise RefusedError("not a sealed control request")
        sender, sent, nonce = message.get("from"), message.get("sent"), message.get("nonce")
        if message.get("to") != self._host:
            raise RefusedError(f"addressed to {message.get('to')!r}, not to {self._host!r}")
        if not isinstance(sender, str) or not isinstance(nonce, bytes):
            raise RefusedError("not a sealed control request")
        now = time.time() if now is None else now
        if (
            not isinstance(sent, int | float)
            or not math.isfinite(sent)
            or abs(now - sent) > MAX_AGE
        ):
            raise RefusedError(
                f"sent at a time more than {MAX_AGE:g}s from this host's clock (stale or replayed,"
                " or the hosts' clocks differ)"
            )
        if sent < self._not_before:
            raise RefusedError("sent before this host's bridge started (stale or replayed)")
        self._forget(now)
        if nonce in self._seen:
            raise RefusedError("replayed")
        if len(self._seen) >= _NONCES:
            raise RefusedError(f"over {_NONCES} requests in {MAX_AGE:g}s: try again shortly")
        self._seen[nonce] = sent + MAX_AGE
        return sender, message["request"], nonce

    def _forget(self, now: float) -> None:
        if self._seen and now > min(self._seen.values()):
            self._seen = {nonce: until for nonce, until in self._seen.items() if until >= now}

    # -- replies -------------------------------------------------------------------------------------

    def seal_reply(self, nonce: bytes, answer: Mapping[str, Any]) -> bytes:
        """The answer to the request of `nonce`."""
        return self.sign(msgpack.packb({"nonce": nonce, "answer": dict(answer)}))

    def open_reply(self, data: bytes, nonce: bytes) -> dict[str, Any]:
        """The answer in a reply to our request of `nonce`; raises RefusedError if it is not
        one (unsigned, signed with other credentials, or for another request)."""
        body = self.verify(data, limit=len(data))
        try:
            message = msgpack.unpackb(body, raw=False)
        except Exception:  # signed garbage
            raise RefusedError("an unreadable reply") from None
        if not isinstance(message, dict) or message.get("nonce") != nonce:
            raise RefusedError("a reply to another request")
        answer = message.get("answer")
        if not isinstance(answer, dict):
            raise RefusedError("an unreadable reply")
        return answer

    def _mac(self, body: bytes) -> bytes | None:
        if self._key is None:
            return None
        return hmac.new(self._key, body, hashlib.sha256).digest()
