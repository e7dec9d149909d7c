"""The control requests that move one module: `stop NAME`, `start NAME` and `restart NAME
--graceful` (a plain `restart` is `CommandHandler`'s); each answers once the module got where it
was asked to go (or could not)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator import control
from orchestrator.instances import being_removed
from orchestrator.states import ChildState

if TYPE_CHECKING:
    from orchestrator.child import ManagedChild
    from orchestrator.control_port import SupervisorPort
    from orchestrator.handover import Handover

OPERATOR_STOP = "stopped by operator"


class ModuleCommands:
    """Mixed into `CommandHandler`: its `supervisor`, `_unknown` and `_restarted` are used."""

    supervisor: SupervisorPort

    def _unknown(self, name: object) -> str:
        raise NotImplementedError

    def _restarted(
        self, child: ManagedChild, generation: int, what: str = "restart"
    ) -> dict[str, Any] | None:
        raise NotImplementedError

    def _left_over(self, child: ManagedChild) -> int | None:
        return self.supervisor.manager.handovers.left_over(child)

    def _module(self, request: dict[str, Any]) -> ManagedChild | dict[str, Any]:
        """The module the request names, or the failure to answer with."""
        manager = self.supervisor.manager
        name = request.get("name")
        child = manager.children.get(name) if isinstance(name, str) else None
        if child is None:
            return control.failure(self._unknown(name), {"kind": "usage"})
        if manager.shutting_down:
            return control.failure("the supervisor is shutting down")
        return child

    def graceful_restart(self, identity: bytes, child: ManagedChild) -> dict[str, Any] | None:
        """`restart NAME --graceful` of a running module: its new process starts beside the old
        one, which stops once the new one is ready; the answer comes once the old one is gone."""
        handover = self.supervisor.manager.graceful_restart(child)
        if isinstance(handover, str):
            return control.failure(handover)
        self.supervisor.wait_for(identity, lambda: _handed_over(handover))
        return None

    def cmd_stop(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """Stop a module and keep it stopped (through reloads) until `start` or `restart`."""
        child = self._module(request)
        if isinstance(child, dict):
            return child
        self.supervisor.manager.hold(child, OPERATOR_STOP)

        def stopped() -> dict[str, Any] | None:
            if being_removed(self.supervisor.manager.children, child):
                return control.reply({"name": child.name, "why": "removed by a reload"})
            if not child.life.held:
                return control.failure(f"{child.name} was started again before it stopped")
            if child.state is not ChildState.STOPPED or self._left_over(child) is not None:
                return None  # a graceful restart's new process still stops: it is not gone
            return control.reply({"name": child.name, "why": child.why})

        self.supervisor.wait_for(identity, stopped)
        return None

    def cmd_start(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """Start a module that is stopped (by `stop`, a dependency, its policy) or failed; a
        running one is left as it is."""
        child = self._module(request)
        if isinstance(child, dict):
            return child
        if child.state is ChildState.RUNNING:
            return control.reply({"name": child.name, "pid": child.pid, "already": True})
        if being_removed(self.supervisor.manager.children, child):
            return control.failure(f"{child.name} is being removed: a reload took it out")
        starting = child.state is ChildState.STARTING
        generation = child.spawns - 1 if starting else child.spawns
        self.supervisor.manager.release(child)
        self.supervisor.wait_for(identity, lambda: self._restarted(child, generation, "start"))
        return None


def _handed_over(handover: Handover) -> dict[str, Any] | None:
    if handover.outcome is None:
        return None
    child = handover.child
    if handover.outcome:
        kept = ""
        if (
            not handover.handed_over
            and child.pid == handover.old_pid
            and child.state is ChildState.RUNNING
            and not child.life.held
        ):
            kept = f"; the old one (pid {handover.old_pid}) keeps running"
        return control.failure(f"{child.name}: {handover.outcome}{kept}")
    return control.reply(
        {"name": child.name, "pid": child.pid, "old_pid": handover.old_pid, "graceful": True}
    )
