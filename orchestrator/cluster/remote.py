"""Control across hosts: `restart HOST/NAME`, `logs HOST/NAME`, through NATS request/reply.

The asking side: the supervisor forwards the CLI's request to its bridge, which sends it sealed
(see `signing`) to `<name>.ctl.<host>` with a reply inbox, and waits `ACK_TIMEOUT` seconds for
the other host to acknowledge it, then as long as the request may take (a restart waits for the
module to run again). No acknowledgement, or no one listening on that subject, is a host that
does not answer: a failure of kind `unreachable` (the CLI exits 4). Replies must be signed for
the request; an unsigned refusal (from a host that could not open it, or from anyone on NATS)
is taken only if nothing signed came within `ACK_TIMEOUT`, and a second acknowledgement means
two hosts answer under one name (a failure that says so).

The answering side: the bridge takes what comes on its own host's subject, checks it (sealed with
this cluster's credentials, addressed to this host, recent, not replayed, one of `ALLOWED`),
acknowledges it and asks its supervisor over the control socket, as the CLI would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from orchestrator.cluster.hosts import Hosts
from orchestrator.cluster.signing import RefusedError, Sealer
from orchestrator.cluster.subjects import control_subject
from orchestrator.cluster.supervisor_link import SupervisorLink, failure

log = logging.getLogger(__name__)

ACK_TIMEOUT = 3.0  # seconds a host has to acknowledge a request before it counts as unreachable
ALLOWED = frozenset(
    {"status", "restart", "stop", "start", "logs"}
)  # what other hosts may ask of this one
MAX_WAIT = 3600.0  # seconds a request may ask to be waited for
MAX_SERVING = 16  # requests of other hosts carried out at once; past it, refused as busy
REFUSALS_LOGGED_EVERY = 60.0  # seconds: the first refusal is logged, then a count this often
_NO_RESPONDERS = "503"
_NOBODY: dict[str, Any] = {}  # in an inbox's signed queue: NATS said no one listens
MAX_SIGNED_REPLIES = 8  # distinct signed replies to one request taken (one host sends two)
UNREACHABLE = "unreachable"


class RemoteControl:
    """Sends the CLI's requests to other hosts, and serves theirs."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        link: SupervisorLink,
        hosts: Hosts,
        sealer: Sealer,
        instance: str = "",
    ):
        self.name = name
        self.host = host
        self._instance = instance  # this bridge run's: in its acknowledgements (see `_answer`)
        self._link = link
        self._hosts = hosts
        self._sealer = sealer
        self._nc: Client | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._refusals = 0  # refused requests not logged yet
        self._refusals_logged_at: float | None = None

    async def connected(self, nc: Client) -> None:
        """NATS is there: take requests for this host."""
        self._nc = nc
        await nc.subscribe(control_subject(self.name, self.host), cb=self.serve)

    # -- asking another host --------------------------------------------------------------------

    async def forward(self, message: dict[str, Any]) -> None:
        """A request the supervisor forwards: to another host, or (no host) for the view of the
        cluster. The answer goes back to the supervisor."""
        host, request = message.get("host"), message.get("request")
        wait = message.get("wait")
        wait = min(float(wait), MAX_WAIT) if isinstance(wait, int | float) and wait >= 0 else 10.0
        if host is None:
            answer: dict[str, Any] = {"ok": True, "data": self._hosts.view()}
        elif not isinstance(host, str) or not isinstance(request, dict):
            answer = failure("malformed forward")
        else:
            answer = await self.ask(host, request, wait)
        what = "the cluster view" if host is None else f"host {host!r}'s answer"
        await self._link.reply(message["forward"], answer, what[:300])

    async def ask(self, host: str, request: dict[str, Any], wait: float) -> dict[str, Any]:
        """Host `host`'s answer to `request`, or a failure saying why there is none."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return failure(
                f"cannot reach host {host!r}: this host is not connected to NATS (see `status`)",
                UNREACHABLE,
            )
        inbox = nc.new_inbox()
        sealed, nonce = self._sealer.seal(host, request)
        # A host never heard of: NATS's word that no one listens is taken at once (forged, it
        # would only say what is so); for a host heard of, only if nothing signed comes in time.
        heard = host in self._hosts.table.peers
        replies = _Inbox(lambda data: self._opened(data, nonce, host), prompt=not heard)
        try:
            # Not capped: anyone may answer on the inbox, and a forged reply must not use up
            # the room of the host's own (`_Inbox` keeps only what is signed).
            sub = await nc.subscribe(inbox, cb=replies.take)
            await nc.publish(control_subject(self.name, host), sealed, reply=inbox)
        except (nats.errors.Error, OSError) as exc:
            return failure(f"cannot reach host {host!r}: {exc}", UNREACHABLE)
        try:
            return await self._answer(replies, host, wait)
        finally:
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    async def _answer(self, replies: _Inbox, host: str, wait: float) -> dict[str, Any]:
        """The host's signed answer: an acknowledgement within ACK_TIMEOUT, then the answer
        within `wait`. What is not signed (a refusal: a host that cannot open our request cannot
        sign for our key; NATS's word that no one listens; or a forgery of either) is taken only
        if nothing signed came in time."""
        ack: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(ACK_TIMEOUT) as deadline:
                while True:
                    answer = await replies.signed.get()
                    if answer is _NOBODY:
                        return failure(self._unknown(host), UNREACHABLE)
                    if not answer.get("ack"):
                        return answer
                    if ack is not None:  # another than the first (a copy is dropped as seen)
                        return failure(
                            f"two hosts answer as {host!r} (duplicate cluster.host): both may"
                            " have carried out the request; give each host its own cluster.host"
                        )
                    ack = answer
                    deadline.reschedule(asyncio.get_running_loop().time() + wait + 1.0)
        except TimeoutError:
            if ack is not None:
                return failure(f"host {host!r} took the request but did not finish it in {wait:g}s")
            unsigned = replies.unsigned
            if unsigned is not None and (_refusal(unsigned) or not replies.no_responders):
                return unsigned
            if replies.no_responders:
                return failure(self._unknown(host), UNREACHABLE)
            return failure(f"host {host!r} did not answer within {ACK_TIMEOUT:g}s", UNREACHABLE)

    def _unknown(self, host: str) -> str:
        known = ", ".join(sorted(self._hosts.reachable())) or "none"
        return f"no host {host!r} answers in cluster {self.name!r} (hosts reachable: {known})"

    # -- answering --------------------------------------------------------------------------------

    def _opened(self, data: bytes, nonce: bytes, host: str) -> tuple[dict[str, Any], bool]:
        """A reply's answer, and whether it is signed for this request."""
        try:
            return self._sealer.open_reply(data, nonce), True
        except RefusedError as exc:
            plain = _decode(data)  # a host that refused us cannot sign for our key: unsigned
            if _refusal(plain):
                return plain, False  # (or a forgery: taken only if nothing signed comes)
            return failure(f"an answer in host {host!r}'s place was refused: {exc}"), False

    async def serve(self, msg: Msg) -> None:
        """A request from another host for this one: checked and acknowledged here, carried out
        in a task of its own (nats-py waits for this callback before the next message)."""
        if not msg.reply:
            return
        try:
            sender, request, nonce = self._sealer.open(msg.data)
        except RefusedError as exc:
            self._refused(msg.subject, str(exc))
            # Unsigned: a refusal reveals nothing, and tells a misconfigured host why.
            await self._respond(
                msg.reply, None, failure(f"refused by host {self.host!r}: {exc}", "refused")
            )
            return
        cmd = request.get("cmd")
        if not isinstance(cmd, str) or cmd not in ALLOWED:
            allowed = ", ".join(sorted(ALLOWED))
            asked = repr(cmd)[:100]
            answer = failure(f"{asked} cannot be asked of another host (only {allowed})", "usage")
            await self._respond(msg.reply, nonce, answer)
            return
        if len(self._serving) >= MAX_SERVING:
            busy = f"host {self.host!r} is busy with {MAX_SERVING} requests: try again shortly"
            await self._respond(msg.reply, nonce, failure(busy))
            return
        await self._respond(msg.reply, nonce, {"ack": True, "by": self._instance})
        log.info("bridge: host %s asks %s of this host", sender, cmd)
        task = asyncio.create_task(self._carry_out(msg.reply, nonce, request))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _carry_out(self, reply: str, nonce: bytes, request: dict[str, Any]) -> None:
        wait = request.get("wait")
        timeout = min(float(wait), MAX_WAIT) if isinstance(wait, int | float) and wait > 0 else 10.0
        answer = await self._link.ask(request, timeout)
        await self._respond(reply, nonce, answer)

    def _refused(self, subject: str, why: str) -> None:
        """Log a refused request: the first at once, then how many every minute at most (anyone
        who can publish on NATS can send them, as fast as they like)."""
        now = time.monotonic()
        if (
            self._refusals_logged_at is None
            or now - self._refusals_logged_at >= REFUSALS_LOGGED_EVERY
        ):
            more = f" (and {self._refusals} more since the last line)" if self._refusals else ""
            log.warning("bridge: refused a control request on %s: %s%s", subject, why, more)
            self._refusals, self._refusals_logged_at = 0, now
        else:
            self._refusals += 1

    async def _respond(self, reply: str, nonce: bytes | None, answer: dict[str, Any]) -> None:
        nc = self._nc
        if nc is None:
            return
        payload = self._packed(nonce, answer)
        if len(payload) > nc.max_payload:
            too_big = f"the answer ({len(payload)} bytes) exceeds NATS's max_payload"
            payload = self._packed(nonce, failure(too_big))
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.publish(reply, payload)

    def _packed(self, nonce: bytes | None, answer: dict[str, Any]) -> bytes:
        if nonce is None:
            return msgpack.packb(answer)  # type: ignore[no-any-return]
        return self._sealer.seal_reply(nonce, answer)


class _Inbox:
    """What comes on a request's reply inbox: the signed answers in order, each once (a copy is
    a replay); aside, the first refusal or other unsigned answer, and NATS's word that no one
    listens (either may be forged: taken only if nothing signed comes)."""

    def __init__(
        self, opened: Callable[[bytes], tuple[dict[str, Any], bool]], *, prompt: bool = False
    ) -> None:
        self.signed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.unsigned: dict[str, Any] | None = None
        self.no_responders = False
        self._opened = opened
        self._prompt = prompt  # NATS's "no one listens" ends the wait (`_NOBODY` in `signed`)
        self._seen: set[bytes] = set()

    async def take(self, msg: Msg) -> None:
        """nats-py's callback for the inbox's messages."""
        if (msg.headers or {}).get("Status") == _NO_RESPONDERS:
            if self._prompt and not self.no_responders:
                self.signed.put_nowait(_NOBODY)
            self.no_responders = True
            return
        answer, signed = self._opened(msg.data)
        if not signed:
            if self.unsigned is None or (_refusal(answer) and not _refusal(self.unsigned)):
                self.unsigned = answer
        elif msg.data not in self._seen and len(self._seen) < MAX_SIGNED_REPLIES:
            self._seen.add(msg.data)
            self.signed.put_nowait(answer)


def _refusal(answer: dict[str, Any]) -> bool:
    """Whether an answer is a host's refusal of a request it could not open."""
    data = answer.get("data")
    return answer.get("ok") is False and isinstance(data, dict) and data.get("kind") == "refused"


def _decode(data: bytes) -> dict[str, Any]:
    try:
        answer = msgpack.unpackb(data, raw=False)
    except Exception:  # garbage from the network
        return failure("the host's answer was unreadable")
    return answer if isinstance(answer, dict) else failure("the host's answer was unreadable")
