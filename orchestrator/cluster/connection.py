"""The bridge's connection to NATS: its options (credentials, TLS, reconnecting forever, no
echo), connecting for as long as it takes, and the one-line state the supervisor shows.

nats-py reconnects by itself after the transport fails, but closes the client for good on most
errors a server sends (`-ERR`: all but a stale connection and a permissions violation), such as
`maximum control line exceeded` or an authorization error once connected: then the bridge ends
(`_end`) with the server's word in `closed_for`, and the supervisor restarts it and shows why.

A mixin of `Bridge`: it sets `_nc`, and calls `_subscribe(nc)` once connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client

from orchestrator.cluster.bridge_lines import STATE_PREFIX, say
from orchestrator.cluster.settings import BridgeSettings
from orchestrator.cluster.subjects import inbox_prefix

log = logging.getLogger(__name__)

RECONNECT_WAIT = 0.5  # seconds between attempts at each server
GIVE_UP_WAIT = 5.0  # seconds before trying again after an error nats-py does not retry
FLUSH_TIMEOUT = 1.0  # seconds a publish may wait for a full outbound buffer: a hung server
PING_INTERVAL = 2  # seconds: a connection that misses 2 pings is dead, found in 4-6 s


def is_refusal(exc: BaseException) -> bool:
    """Whether an error is a server's or TLS's refusal (bad credentials, an unknown certificate,
    a protocol error), rather than the transport failing (a reset, an EOF, a timeout)."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return True
    transport = (
        OSError,
        asyncio.TimeoutError,
        nats.errors.StaleConnectionError,
        nats.errors.ConnectionClosedError,
    )
    return not isinstance(exc, transport)


class NatsConnection:
    """Connects `_nc` to the servers of `settings`, and says how the connection fares."""

    settings: BridgeSettings
    _nc: Client | None

    def __init__(self) -> None:
        self._state = ""
        self._last_error = ""
        self._refused = False  # the last error was the server's (or TLS's) refusal
        self._connected = False  # `_nc` connected once: its closing now ends the bridge
        self._closing = False  # the bridge closes it (at its stop): its closing is expected
        self.closed_for: str | None = None  # why NATS closed the connection for good
        self._end: Callable[[], None] = lambda: None  # ends the bridge (see `_closed`)

    async def _subscribe(self, nc: Client) -> None:
        raise NotImplementedError

    async def _connect(self) -> None:
        """Connect (nats-py retries every server for as long as it takes), subscribe, and say
        so. What nats-py does not retry (a TLS file it cannot read, say) is said and tried again
        every few seconds: the fix is a config change, which restarts the bridge anyway."""
        while True:
            nc = Client()
            self._nc = nc
            try:
                await nc.connect(**self.connect_options())
                self._connected = True
                break
            except Exception as exc:  # anything: the state line says what, and we try again
                self._state_changed(f"disconnected: {str(exc) or type(exc).__name__}")
                with contextlib.suppress(Exception):
                    await nc.close()
                await asyncio.sleep(GIVE_UP_WAIT)
        await self._subscribe(nc)
        await nc.flush()  # the server has our subscriptions: "connected" means receiving
        self._last_error, self._refused = "", False
        self._state_changed(f"connected to {self._server(nc)}")

    def connect_options(self) -> dict[str, Any]:
        """nats-py's `connect` arguments: reconnect forever, never echo our own messages."""
        options: dict[str, Any] = {
            "servers": list(self.settings.servers),
            "name": f"orchestrator-bridge {self.settings.host}",
            "no_echo": True,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "connect_timeout": 2,
            "inbox_prefix": inbox_prefix(self.settings.name, self.settings.host),
            "ping_interval": PING_INTERVAL,
            "max_outstanding_pings": 2,
            "flush_timeout": FLUSH_TIMEOUT,
            "error_cb": self._error,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "closed_cb": self._closed,
        }
        credentials = self.settings.credentials
        for key, option in (
            ("token", "token"),
            ("user", "user"),
            ("password", "password"),
            ("nkey_seed", "nkeys_seed"),
            ("creds", "user_credentials"),
        ):
            if key in credentials:
                options[option] = credentials[key]
        tls = self.settings.tls
        if tls:
            context = ssl.create_default_context(cafile=tls.get("ca"))
            if "cert" in tls:
                context.load_cert_chain(tls["cert"], tls.get("key"))
            options["tls"] = context
        return options

    def _server(self, nc: Client) -> str:
        server = nc.connected_url
        if server is None:
            return "?"
        return f"{server.scheme}://{server.hostname}:{server.port}"  # no user or password

    def _state_changed(self, state: str) -> None:
        if state != self._state:
            self._state = state
            say(f"{STATE_PREFIX}{state}")

    async def _error(self, exc: Exception) -> None:
        if not isinstance(exc, nats.errors.Error | OSError | asyncio.TimeoutError):
            # Raised by one of our message callbacks (nats-py hands it here): a bug of ours,
            # not the connection's state.
            log.error("bridge: handling a NATS message failed", exc_info=exc)
            return
        refusal = is_refusal(exc)
        if self._refused and not refusal:
            return  # "Authorization Violation" says more than the connection reset after it
        self._refused = refusal
        why = str(exc) or type(exc).__name__
        self._last_error = why.removeprefix("nats: ")
        if not self._state.startswith("connected"):
            self._state_changed(f"disconnected: {self._last_error}")

    async def _disconnected(self) -> None:
        self._state_changed(f"disconnected: {self._last_error or 'connection lost'}")

    async def _reconnected(self) -> None:
        self._last_error, self._refused = "", False
        if self._nc is not None:
            self._state_changed(f"connected to {self._server(self._nc)}")

    async def _closed(self) -> None:
        """nats-py closed the client: for good, whatever comes next. Unless the bridge is
        stopping (or the client never connected: `_connect` tries a new one), the bridge ends,
        saying why, to be restarted: it would otherwise run on, unconnected, forever."""
        if self._closing or not self._connected:
            return
        error = self._nc.last_error if self._nc is not None else None
        why = (str(error) or type(error).__name__) if error is not None else self._last_error
        self.closed_for = why.removeprefix("nats: ") or "the NATS client closed it"
        self._state_changed(f"disconnected: closed ({self.closed_for})")
        self._end()
