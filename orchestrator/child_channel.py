"""The supervisor's side of the child channel: what module processes say (`module_sdk.protocol`'s
hello, ready, heartbeat and error), and the spec that answers a hello."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from module_sdk import protocol
from orchestrator.child import ManagedChild
from orchestrator.config import BusSection
from orchestrator.health import Health
from orchestrator.manager import ChildManager
from orchestrator.spec import module_spec


class ChildChannel:
    """Hands each child message to the manager (and the memory check); answers hellos."""

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        manager: ChildManager,
        health: Health,
        *,
        bus: BusSection,
        xsub: str,
        xpub: str,
        groups: str | None = None,
        curve: dict[str, str] | None,
        log_level: Callable[[], str],
        on_heartbeat: Callable[[ManagedChild, dict[str, Any]], None] | None = None,
    ) -> None:
        self._socket = socket
        self._manager = manager
        self._health = health
        self._bus, self._xsub, self._xpub, self._curve = bus, xsub, xpub, curve
        self._log_level = log_level
        self._groups = groups
        self._on_heartbeat = on_heartbeat  # the metrics endpoint takes the module's own metrics

    def handle(self, identity: bytes, message: dict[str, Any]) -> None:
        """One message from a module process (untrusted: checked field by field)."""
        pid = message.get("pid")
        kind = message.get("kind")
        manager = self._manager
        if kind == protocol.ERROR:
            manager.reported_error(pid, message)
            return
        child = manager.by_pid.get(pid) if isinstance(pid, int) else None
        if child is None:
            return
        if kind == protocol.HELLO:
            self._send_spec(identity, child)
        elif kind == protocol.READY:
            manager.ready(child, contained=message.get("contained") is True)
        elif kind == protocol.HEARTBEAT:
            manager.heartbeat(child, message)
            if self._on_heartbeat is not None:
                self._on_heartbeat(child, message)
            self._health.check_memory(child)

    def _send_spec(self, identity: bytes, child: ManagedChild) -> None:
        payload = module_spec(
            child,
            bus=self._bus,
            xsub=self._xsub,
            xpub=self._xpub,
            groups=self._groups,
            curve=self._curve,
            log_level=self._log_level(),
        )
        self._socket.send_multipart([identity, msgpack.packb(payload)], zmq.NOBLOCK)
