"""The control requests that move one module: `stop NAME`, `start NAME` and `restart NAME
--graceful` (a plain `restart` is `CommandHandler`'s); each answers once the module got where it
was asked to go (or could not)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from orchestrator import control
from orchestrator.instances import being_removed, live_members
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
        found = self._modules(request)
        if isinstance(found, dict):
            return found
        if len(found) > 1:
            return control.failure(f"{request['name']} has instances: name one", {"kind": "usage"})
        return found[0]

    def _modules(self, request: dict[str, Any]) -> list[ManagedChild] | dict[str, Any]:
        """The modules the request's name stands for (a module with `instances:`: every one
        that a scale down is not removing, as for `restart`), or the failure to answer with."""
        manager = self.supervisor.manager
        name = request.get("name")
        children = live_members(manager.children, name) if isinstance(name, str) else []
        exact = manager.children.get(name) if isinstance(name, str) else None
        if not children and exact is not None:
            children = [exact]  # being removed: the answer says so
        if not children:
            return control.failure(self._unknown(name), {"kind": "usage"})
        if manager.shutting_down:
            return control.failure("the supervisor is shutting down")
        return children

    def graceful_restart(self, identity: bytes, child: ManagedChild) -> dict[str, Any] | None:
        """`restart NAME --graceful` of a running module: its new process starts beside the old
        one, which stops once the new one is ready; the answer comes once the old one is gone."""
        handover = self.supervisor.manager.graceful_restart(child)
        if isinstance(handover, str):
            return control.failure(handover)
        self.supervisor.wait_for(identity, lambda: _handed_over(handover))
        return None

    def cmd_stop(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """Stop a module (every instance of one with `instances:`) and keep it stopped (through
        reloads) until `start` or `restart`."""
        children = self._modules(request)
        if isinstance(children, dict):
            return children
        for child in children:
            self.supervisor.manager.hold(child, OPERATOR_STOP)
        waiters = [self._stopped(child) for child in children]
        self.supervisor.wait_for(identity, _all(request["name"], waiters))
        return None

    def _stopped(self, child: ManagedChild) -> Callable[[], dict[str, Any] | None]:
        """The answer to `stop` of `child` once it stopped (None: not yet)."""

        def stopped() -> dict[str, Any] | None:
            if being_removed(self.supervisor.manager.children, child):
                return control.reply({"name": child.name, "why": "removed by a reload"})
            if not child.life.held:
                return control.failure(f"{child.name} was started again before it stopped")
            if child.state is not ChildState.STOPPED or self._left_over(child) is not None:
                return None  # a graceful restart's new process still stops: it is not gone
            return control.reply({"name": child.name, "why": child.why})

        return stopped

    def cmd_start(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        """Start a module (every instance of one with `instances:`) that is stopped (by `stop`,
        a dependency, its policy) or failed; a running one is left as it is."""
        children = self._modules(request)
        if isinstance(children, dict):
            return children
        waiters: list[Callable[[], dict[str, Any] | None]] = []
        for child in children:
            if child.state is ChildState.RUNNING:
                answer = control.reply({"name": child.name, "pid": child.pid, "already": True})
                waiters.append(partial(dict, answer))  # answered already
                continue
            if being_removed(self.supervisor.manager.children, child):
                return control.failure(f"{child.name} is being removed: a reload took it out")
            starting = child.state is ChildState.STARTING
            generation = child.spawns - 1 if starting else child.spawns
            self.supervisor.manager.release(child)
            waiters.append(partial(self._restarted, child, generation, "start"))
        if len(waiters) == 1 and children[0].state is ChildState.RUNNING:
            return waiters[0]()
        self.supervisor.wait_for(identity, _all(request["name"], waiters))
        return None


def _all(
    name: str, waiters: list[Callable[[], dict[str, Any] | None]]
) -> Callable[[], dict[str, Any] | None]:
    """One answer for the instances of `name` once each has its own: the first failure, else
    `{name, instances: [each one's data]}` (a module without instances: its own answer)."""

    def answer() -> dict[str, Any] | None:
        answers = [waiter() for waiter in waiters]
        if any(answer is None for answer in answers):
            return None
        failed = [a for a in answers if a is not None and not a.get("ok")]
        if len(waiters) == 1 or failed:
            return (failed or answers)[0]
        return control.reply({"name": name, "instances": [a["data"] for a in answers if a]})

    return answer


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
