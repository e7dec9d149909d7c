"""The supervisor's side of the child channel: what module processes say (`module_sdk.protocol`'s
hello, ready, heartbeat, unhealthy and error), and the spec that answers a hello."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
import zmq

from module_sdk import protocol
from module_sdk.health import bounded_message
from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.config import BusSection
from orchestrator.manager import ChildManager
from orchestrator.resources import grant_threads
from orchestrator.spec import module_spec
from orchestrator.states import ExitReason

log = logging.getLogger(__name__)


class RunHooks(Protocol):
    """What the scheduler hears from the child channel."""

    def ready(self, child: ManagedChild, *, can_run: bool) -> None: ...

    def result(self, child: ManagedChild, message: dict[str, Any]) -> None: ...


class ChildChannel:
    """Hands each child message to the manager; answers hellos."""

    def __init__(
        self,
        socket: zmq.Socket[bytes],
        manager: ChildManager,
        *,
        bus: BusSection,
        xsub: str,
        xpub: str,
        groups: str | None = None,
        curve: dict[str, str] | None,
        log_level: Callable[[], str],
        on_heartbeat: Callable[[ManagedChild, dict[str, Any]], None] | None = None,
        runs: RunHooks | None = None,
    ) -> None:
        self._socket = socket
        self._manager = manager
        self._bus, self._xsub, self._xpub, self._curve = bus, xsub, xpub, curve
        self._log_level = log_level
        self._groups = groups
        self._on_heartbeat = on_heartbeat  # the metrics endpoint takes the module's own metrics
        self.runs = runs  # the scheduler: which modules define run(), and how their runs end
        self._impostors = Impostors()

    def handle(self, identity: bytes, message: dict[str, Any]) -> None:
        """One message from a module process (untrusted: checked field by field)."""
        pid = message.get("pid")
        kind = message.get("kind")
        manager = self._manager
        if kind == protocol.ERROR:
            manager.reported_error(pid, message, identity)
            return
        child = manager.by_pid.get(pid) if isinstance(pid, int) else None
        if child is None and kind == protocol.HEARTBEAT:
            manager.late_heartbeat(pid, message, identity)
            return
        if child is None or child.process is None:
            return
        if identity != child.process.channel_id:  # not the process it claims to be
            self._impostors.note(child.name, pid)
            return
        if kind == protocol.HELLO:
            self._send_spec(identity, child)
        elif kind == protocol.READY:
            manager.ready(child, contained=message.get("contained") is True)
            if self.runs is not None:
                self.runs.ready(child, can_run=message.get("run") is True)
        elif kind == protocol.RUN_RESULT:
            if self.runs is not None:
                self.runs.result(child, message)
        elif kind == protocol.HEARTBEAT:
            manager.heartbeat(child, message)
            if self._on_heartbeat is not None:
                self._on_heartbeat(child, message)
        elif kind == protocol.UNHEALTHY:
            # Bounded here too (the child's own bounding is a courtesy, not a limit); scrubbed
            # before the cut, so that no secret is cut in two and half of it shown.
            said = message.get("error")
            said = said[: 2 * protocol.MESSAGE_LIMIT] if isinstance(said, str) else ""
            error = bounded_message(manager.redactor.scrub(said))
            manager.handle(child, lc.HealthFailed(ExitReason.UNHEALTHY, error or "health() failed"))

    def send_run(self, child: ManagedChild, run_id: int) -> bool:
        """Ask `child` to call its module's run() (False if the message cannot go out now)."""
        if child.pid is None:
            return False
        if child.process is None:
            return False
        identity = child.process.channel_id  # the shim's routing id
        message = protocol.Run(kind=protocol.RUN, id=run_id)
        try:
            self._socket.send_multipart([identity, msgpack.packb(message)], zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    def _send_spec(self, identity: bytes, child: ManagedChild) -> None:
        manager = self._manager
        asked = {c.name: c.spec.supervision.concurrency for c in manager.children.values()}
        child.threads_granted = grant_threads(manager.limits.max_threads, asked)[child.name]
        payload = module_spec(
            child,
            bus=self._bus,
            xsub=self._xsub,
            xpub=self._xpub,
            groups=self._groups,
            curve=self._curve,
            log_level=self._log_level(),
            error_handling=manager.config.error_handling,
            concurrency=child.threads_granted,
        )
        self._socket.send_multipart([identity, msgpack.packb(payload)], zmq.NOBLOCK)


class Impostors:
    """Messages that name a module process but come from another routing id: dropped, and said
    once per minute (a module run as another user trying to speak for a module it is not)."""

    def __init__(self) -> None:
        self._dropped = 0
        self._said = -math.inf

    def note(self, name: str, pid: object) -> None:
        self._dropped += 1
        now = time.monotonic()
        if now - self._said >= 60.0:
            log.warning(
                "ignored %d child message(s) claiming to be %s (pid %s) from another process",
                self._dropped,
                name,
                pid,
            )
            self._said, self._dropped = now, 0
