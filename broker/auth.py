"""CURVE authentication for a broker reachable over TCP: only the one client key that the
supervisor hands to its modules (and to its CLI, over the owner-only control socket) connects.

pyzmq's ZAP authenticator (`zmq.auth`) answers libzmq's authentication requests on a thread; a
peer without the key fails the handshake and never reaches the proxy.
"""

from __future__ import annotations

import logging

import zmq
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)
ZAP_DOMAIN = b"orchestrator"


class _OneKey:
    """A credentials provider that allows exactly one client public key (z85)."""

    def __init__(self, allowed: bytes) -> None:
        self._allowed = allowed
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key == self._allowed:
            return True
        self.refused += 1  # a refused peer retries: say so once, then every 1000th time
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("refused a bus peer without the bus key (%d so far)", self.refused)
        return False


def start_authenticator(
    context: zmq.Context[zmq.Socket[bytes]], client_public: bytes
) -> ThreadAuthenticator:
    """Answer ZAP requests on `context`, allowing only `client_public`; stop() it when done."""
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(
        domain=ZAP_DOMAIN.decode(), credentials_provider=_OneKey(client_public)
    )
    return auth


def make_server(sock: zmq.Socket[bytes], server_secret: bytes) -> None:
    """Make `sock` a CURVE server with `server_secret`, authenticated through ZAP."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, server_secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
