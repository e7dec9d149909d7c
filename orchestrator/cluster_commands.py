"""The control requests of cluster mode: what the CLI asks of other hosts, and the bridge's link.

`remote` (`restart HOST/NAME`, `logs HOST/NAME`, `status HOST/NAME`) and `cluster` (`status
--cluster`) are handed to the bridge through the `Forwarder`; a request for this host's own name
is answered here, as if asked directly. `bridge_attach` and `bridge_reply` are the bridge's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator import __version__, control
from orchestrator.cluster.peers import MODULE_FIELDS, UP

if TYPE_CHECKING:
    from orchestrator.control_port import SupervisorPort

REMOTE_COMMANDS = frozenset(
    {"status", "restart", "stop", "start", "logs"}
)  # what may be asked of another host
_CLUSTER_WAIT = 5.0  # seconds the view of the cluster may take (it is the bridge's, in memory)
Waiter = Callable[[], dict[str, Any] | None]
_NOT_CLUSTER = "this host is not in cluster mode (main.yaml has no cluster: section)"


class ClusterCommands:
    """Mixed into `CommandHandler`: its `supervisor`, `handle` and `status_data` are used."""

    supervisor: SupervisorPort

    def handle(self, identity: bytes, request: dict[str, Any]) -> None:
        raise NotImplementedError

    def status_data(self) -> dict[str, Any]:
        raise NotImplementedError

    def cmd_bridge_attach(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        if not self.supervisor.forwarder.attach(identity, request.get("key")):
            return control.failure("not this supervisor's bridge")
        return control.reply(None)

    def cmd_bridge_reply(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        forwarder = self.supervisor.forwarder
        if not forwarder.answered(request.get("key"), request.get("id"), request.get("reply")):
            return control.failure("not a reply this supervisor waits for")
        return control.reply(None)

    def cmd_remote(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """`{"host": H, "request": {"cmd": ..., ...}, "timeout": S}`: ask host H's supervisor,
        which has S seconds to answer once it took the request."""
        host, inner = request.get("host"), request.get("request")
        wait = request.get("timeout", 10.0)
        bridge = self.supervisor.bridge
        if bridge is None:
            return control.failure(_NOT_CLUSTER, {"kind": "usage"})
        if not isinstance(host, str) or not isinstance(inner, dict):
            return control.failure("malformed request: expected a host and a request")
        if inner.get("cmd") not in REMOTE_COMMANDS:
            allowed = ", ".join(sorted(REMOTE_COMMANDS))
            return control.failure(
                f"only {allowed} can be asked of another host", {"kind": "usage"}
            )
        if not isinstance(wait, int | float) or not 0 <= wait <= 86400:
            return control.failure("malformed request: timeout must be 0 to 86400 seconds")
        if host == bridge.settings.host:
            self.handle(identity, inner)  # this very host: as if asked directly
            return None
        return self._forward(identity, host, {**inner, "wait": wait}, float(wait))

    def cmd_cluster(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """Every host of the cluster, this one first: its state, pid, version and modules."""
        if self.supervisor.bridge is None:
            return control.failure(_NOT_CLUSTER, {"kind": "usage"})
        return self._forward(identity, None, None, _CLUSTER_WAIT, with_own_row=True)

    def _forward(
        self,
        identity: bytes,
        host: str | None,
        request: dict[str, Any] | None,
        wait: float,
        *,
        with_own_row: bool = False,
    ) -> dict[str, Any] | None:
        waiter = self.supervisor.forwarder.forward(host, request, wait)
        if isinstance(waiter, dict):
            return waiter
        if with_own_row:
            waiter = self._with_own_row(waiter)
        self.supervisor.wait_for(identity, waiter)
        return None

    def _with_own_row(self, waiter: Waiter) -> Waiter:
        def answer() -> dict[str, Any] | None:
            reply = waiter()
            data = reply.get("data") if reply is not None else None
            if reply is not None and reply.get("ok"):
                if not isinstance(data, dict) or not isinstance(data.get("hosts"), list):
                    return control.failure("the bridge's view of the cluster was malformed")
                data["hosts"].insert(0, self._own_row())
            return reply

        return answer

    def _own_row(self) -> dict[str, Any]:
        status = self.status_data()
        bridge = self.supervisor.bridge
        supervisor = status["supervisor"]
        return {
            "host": bridge.settings.host if bridge is not None else "?",
            "state": UP,
            "since": supervisor["started"],
            "last_heard": 0.0,
            "pid": supervisor["pid"],
            "version": __version__,
            "started": supervisor["started"],
            "modules": [{key: row.get(key) for key in MODULE_FIELDS} for row in status["modules"]],
            "this_host": True,
        }
