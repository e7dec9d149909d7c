"""What the bridge process needs, handed over as JSON in one environment variable.

Never on the command line: `/proc/PID/cmdline` is world-readable, and these settings hold the
cluster's credentials and the bus's CURVE keys. The bridge removes the variable from its own
environment as soon as it has read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.config.model import ClusterSection

ENV_BRIDGE = "ORCHESTRATOR_BRIDGE"


@dataclass(frozen=True)
class BridgeSettings:
    """The local bus's endpoints (and CURVE client keys on a tcp bus), the lifeline fd, and the
    cluster: servers, subject prefix, this host's name, export patterns, credentials, TLS."""

    xsub: str
    xpub: str
    servers: tuple[str, ...]
    name: str
    host: str
    export: tuple[str, ...]
    lifeline: int | None = None
    curve: dict[str, str] | None = None
    high_water_mark: int = 100_000
    max_message_size: int = -1
    credentials: dict[str, str] = field(default_factory=dict)  # token | user+password | files
    tls: dict[str, str] = field(default_factory=dict)  # ca, cert, key
    control: str = ""  # the supervisor's control socket (none: no announcements, no control)
    link_key: str = ""  # proves to the supervisor that a `bridge_attach` comes from its bridge
    # The supervisor's event id prefix: this host's from the bridge's start (a message from NATS
    # claiming it is not imported), though the supervisor may not publish for a long while.
    local_prefix: str = ""

    @classmethod
    def of(
        cls,
        cluster: ClusterSection,
        *,
        xsub: str,
        xpub: str,
        lifeline: int | None,
        curve: dict[str, str] | None,
        high_water_mark: int,
        max_message_size: int,
        control: str = "",
        link_key: str = "",
        local_prefix: str = "",
    ) -> BridgeSettings:
        """The settings of the bridge for `cluster` on this host's bus."""
        credentials: dict[str, str] = {}
        if cluster.credentials is not None:
            credentials = {
                key: str(value)
                for key, value in asdict(cluster.credentials).items()
                if value is not None
            }
        tls: dict[str, str] = {}
        if cluster.tls is not None:
            tls = {key: str(value) for key, value in asdict(cluster.tls).items() if value}
        return cls(
            xsub=xsub,
            xpub=xpub,
            servers=cluster.servers,
            name=cluster.name,
            host=cluster.host,
            export=cluster.export,
            lifeline=lifeline,
            curve=curve,
            high_water_mark=high_water_mark,
            max_message_size=max_message_size,
            credentials=credentials,
            tls=tls,
            control=control,
            link_key=link_key,
            local_prefix=local_prefix,
        )

    def to_json(self) -> str:
        """The value of `ENV_BRIDGE`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BridgeSettings:
        """Read `to_json`'s output back; raises ValueError (or TypeError) if it is not that."""
        raw: dict[str, Any] = json.loads(text)
        raw["servers"] = tuple(raw["servers"])
        raw["export"] = tuple(raw["export"])
        return cls(**raw)
