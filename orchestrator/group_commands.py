"""The control requests about instances and schedules: `scale`, `run`, and what `status` and
`restart` do with a module that runs instances (its name stands for all of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator import control
from orchestrator import lifecycle as lc
from orchestrator.config.scheduling import MAX_INSTANCES
from orchestrator.instances import being_removed, live_members, members, scale
from orchestrator.states import ChildState

if TYPE_CHECKING:
    from orchestrator.child import ManagedChild
    from orchestrator.control_port import SupervisorPort
    from orchestrator.scheduler import Scheduler

Reply = dict[str, Any] | None
_LOG_TAIL = 20  # lines of each instance's log that `status NAME` shows, as for a module


class GroupCommands:
    """Mixed into `CommandHandler`: its `supervisor`, `_restarted` and `_unknown` are used."""

    supervisor: SupervisorPort
    scheduler: Callable[[], Scheduler] | None = None

    def _restarted(self, child: ManagedChild, generation: int) -> Reply:
        raise NotImplementedError

    def _unknown(self, name: object) -> str:
        raise NotImplementedError

    def annotate(self, rows: list[dict[str, Any]]) -> None:
        """Add to each status row its module (`instance_of`, for an instance) and `schedule`."""
        children = self.supervisor.manager.children
        scheduler = self.scheduler() if self.scheduler is not None else None
        for row in rows:
            child = children.get(row["name"])
            row["instance_of"] = child.spec.instance_of if child is not None else None
            row["schedule"] = scheduler.status(row["name"]) if scheduler is not None else None

    def group_status(self, name: str, data: dict[str, Any]) -> Reply:
        """`status NAME` of a module with instances: one row per instance; None if `name` is
        not such a module."""
        manager = self.supervisor.manager
        children = {c.name: c for c in members(manager.children, name)}
        if not children:
            return None
        data["modules"] = [row for row in data["modules"] if row["name"] in children]
        for row in data["modules"]:
            row.update(children[row["name"]].details(manager.redactor, _LOG_TAIL))
        return control.reply(data)

    def group_restart(self, identity: bytes, name: str) -> Reply:
        """`restart NAME` of a module with instances: each in turn, the next once the previous
        runs again (so the pool never loses more than one)."""
        manager = self.supervisor.manager
        queue = live_members(manager.children, name)
        if not queue:
            return control.failure(self._unknown(name), {"kind": "usage"})
        restarted: list[dict[str, Any]] = []
        current: list[tuple[ManagedChild, int]] = []

        def next_one() -> Reply:
            if current and manager.children.get(current[0][0].name) is not current[0][0]:
                current.clear()  # removed meanwhile (a scale down, a reload): nothing to wait for
            if current:
                answer = self._restarted(*current[0])
                if answer is None:
                    return None
                if not answer.get("ok"):
                    return answer
                restarted.append(answer["data"])
                current.clear()
            while queue and (
                manager.children.get(queue[0].name) is not queue[0] or _removing(queue[0])
            ):
                queue.pop(0)  # removed since the restart began
            if not queue:
                return control.reply({"name": name, "pid": None, "instances": restarted})
            child = queue.pop(0)
            current.append((child, child.spawns))
            manager.restart(child, release=True)  # an operator's, as for one module
            return next_one()

        answer = next_one()
        if answer is not None:
            return answer
        self.supervisor.wait_for(identity, next_one)
        return None

    def cmd_scale(self, identity: bytes, request: dict[str, Any]) -> Reply:
        """`{"name": NAME, "count": N}`: run N instances of NAME; answers once the new ones run
        and the extras are gone."""
        manager = self.supervisor.manager
        name, count = request.get("name"), request.get("count")
        entry = manager.config.module(name) if isinstance(name, str) else None
        if entry is None or not entry.enabled:
            return control.failure(self._unknown(name), {"kind": "usage"})
        group = entry.name
        if entry.instances is None:
            return control.failure(
                f"{name} runs one process: give it `instances:` in modules.yaml to scale it",
                {"kind": "usage"},
            )
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_INSTANCES:
            return control.failure(
                f"expected 1 to {MAX_INSTANCES} instances, got {count!r}", {"kind": "usage"}
            )
        if manager.shutting_down:
            return control.failure("the supervisor is shutting down")
        started, removed = scale(manager, group, count)

        def scaled() -> Reply:
            running = [c.name for c in live_members(manager.children, group)]
            for child in started:
                if being_removed(manager.children, child):
                    now = f"{len(running)} running: {', '.join(running) or 'none'}"
                    return control.failure(
                        f"{group} was changed again (another `scale`, or a reload) before it was"
                        f" scaled ({now})"
                    )
                if child.state is ChildState.WAITING and not manager.venvs.preparing(child.spec):
                    return control.failure(f"{child.name} is waiting: {child.why}")
                if child.state is ChildState.FAILED or child.failed_spawn >= child.spawns > 0:
                    cause = child.last_exit.cause() if child.last_exit else child.state.value
                    return control.failure(f"{child.name} did not start: {cause}")
                if child.state is not ChildState.RUNNING:
                    return None
            if any(manager.children.get(c.name) is c and _removing(c) for c in removed):
                return None  # (one a later scale revived is not waited for)
            return control.reply({"name": group, "count": len(running), "instances": running})

        self.supervisor.wait_for(identity, scaled)
        return None

    def cmd_run(self, identity: bytes, request: dict[str, Any]) -> Reply:
        """`{"name": NAME}`: run scheduled module NAME now; answers once that run has ended."""
        name = request.get("name")
        scheduler = self.scheduler() if self.scheduler is not None else None
        if not isinstance(name, str) or name not in self.supervisor.manager.children:
            return control.failure(self._unknown(name), {"kind": "usage"})
        if scheduler is None or scheduler.status(name) is None:
            return control.failure(f"{name} has no schedule", {"kind": "usage"})
        if self.supervisor.manager.shutting_down:
            return control.failure("the supervisor is shutting down")
        seq = scheduler.fire(name)
        if seq is None:
            schedule = scheduler.schedules[name]
            if schedule.queued:
                return control.reply({"name": name, "result": "queued", "queued": schedule.queued})
            return control.failure(f"{name}: a run is in progress (overlap: skip); skipped")

        def ended() -> Reply:
            result = scheduler.outcome(name, seq)
            if result is None:
                return None
            if result != "ok":
                return control.failure(f"{name}: run {seq} failed: {result}")
            return control.reply({"name": name, "run": seq, "result": result})

        self.supervisor.wait_for(identity, ended)
        return None


def _removing(child: ManagedChild) -> bool:
    return child.life.intent is lc.Intent.REMOVE
