"""The CURVE keys of a tcp bus, made afresh by each supervisor and never written to disk.

The broker is the CURVE server and admits one client key; modules get that key pair in their
spec (over the owner-only child channel), the CLI over the owner-only control socket. A local
user who cannot reach those sockets cannot join the bus, read its events or inject any.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq


@dataclass(frozen=True)
class BusKeys:
    """Two z85 key pairs: the broker's (server) and the one its clients share."""

    server_public: str
    server_secret: str
    client_public: str
    client_secret: str

    @classmethod
    def generate(cls) -> BusKeys:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(
            server_public.decode(),
            server_secret.decode(),
            client_public.decode(),
            client_secret.decode(),
        )

    def client(self) -> dict[str, str]:
        """What a bus client needs (`module_sdk`'s `curve` argument)."""
        return {
            "server_key": self.server_public,
            "public_key": self.client_public,
            "secret_key": self.client_secret,
        }

    def broker(self) -> str:
        """What the broker needs, as its ORCHESTRATOR_BUS_CURVE variable."""
        return f"{self.server_secret} {self.client_public}"

    def secrets(self) -> tuple[str, str]:
        """The two secret keys, for the redactor: they must never show in a log."""
        return self.server_secret, self.client_secret
