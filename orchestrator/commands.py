"""The supervisor's side of the control socket: one method per CLI request."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator import control
from orchestrator.cluster_commands import ClusterCommands
from orchestrator.group_commands import GroupCommands
from orchestrator.instances import being_removed
from orchestrator.isolation import limits_report
from orchestrator.logsetup import log_losses
from orchestrator.logtail import last_lines
from orchestrator.module_commands import OPERATOR_STOP, ModuleCommands
from orchestrator.states import ChildState

if TYPE_CHECKING:
    from orchestrator.child import ManagedChild
    from orchestrator.control_port import SupervisorPort
    from orchestrator.scheduler import Scheduler

log = logging.getLogger(__name__)
_LOG_TAIL = 20  # lines of the module's log that `status NAME` shows
_LOGS_MAX_LINES = 10_000  # lines `logs` may ask for
_LOGS_MAX_BYTES = 512 * 1024  # of a log's end that `logs` reads: a reply must cross NATS


class CommandHandler(ModuleCommands, ClusterCommands, GroupCommands):
    """Answers control requests; long ones (`restart`, `down`, `wait_started`) answer later.
    `stop`, `start` and graceful restarts are `ModuleCommands`'; the cluster's (`remote`,
    `cluster`, the bridge's link) are `ClusterCommands`'."""

    def __init__(
        self, supervisor: SupervisorPort, scheduler: Callable[[], Scheduler] | None = None
    ) -> None:
        self.supervisor = supervisor  # narrow callables, not the Supervisor itself
        self.scheduler = scheduler

    def handle(self, identity: bytes, request: dict[str, Any]) -> None:
        """Dispatch one request to the method of the same name."""
        cmd = request.get("cmd")
        method = getattr(self, f"cmd_{cmd}", None) if isinstance(cmd, str) else None
        if method is None:
            self.supervisor.send_reply(identity, control.failure(self._bad_command(cmd)))
            return
        answer = method(identity, request)
        if answer is not None:
            self.supervisor.send_reply(identity, answer)

    def status_data(self, *, sample: bool = True) -> dict[str, Any]:
        """Everything `orchestrator status --json` prints; without `sample`, no module's RSS and
        CPU (the metrics endpoint samples them off the loop)."""
        manager = self.supervisor.manager
        now = time.monotonic()
        modules = [
            {
                **child.status(
                    now,
                    manager.sampler.sample(child.pid) if sample and child.pid is not None else {},
                ),
                "limits": limits_report(
                    child.spec.limits,
                    manager.cgroups.notes.get(child.cgroup),
                    manager.cgroups.enforced_by.get(child.cgroup),
                ),
            }
            for child in manager.children.values()
        ]
        for row, child in zip(modules, manager.children.values(), strict=True):
            row.update(manager.venvs.status(child.spec))
            row["standby_pid"] = manager.standbys.pid(child.name)  # waiting to take over
            left_over = manager.handovers.left_over(child)
            if left_over is not None:  # an overtaken graceful restart's new process, stopping
                row["pid"] = left_over
                if child.state is ChildState.STOPPED:
                    row["state"] = ChildState.STOPPING.value
        self.annotate(modules)  # instances and schedules
        overview = self.supervisor.overview()  # supervisor, bus, system, config
        overview["supervisor"]["logs"] = str(self.supervisor.logs)
        return {
            **overview,
            "limits": {
                **manager.limits.as_dict(len(manager.children)),
                # Of every module: `status NAME`'s rows are that module's only.
                "threads_granted": sum(c.threads_granted or 0 for c in manager.children.values()),
            },
            "modules": modules,
            "logging": log_losses(child.log.file for child in manager.children.values()),
        }

    def cmd_status(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        """`{"name": NAME}` for one module; `{"sample": false}` without RSS and CPU (cheap: the
        bridge asks every second, for its announcements)."""
        name = request.get("name")
        data = self.status_data(sample=request.get("sample") is not False)
        if name is not None:
            child = self.supervisor.manager.children.get(name) if isinstance(name, str) else None
            if child is None and isinstance(name, str) and (group := self.group_status(name, data)):
                return group  # a module with instances: every instance's row
            if child is None:
                return control.failure(self._unknown(name), {"kind": "usage"})
            row = next(row for row in data["modules"] if row["name"] == name)
            row.update(child.details(self.supervisor.manager.redactor, _LOG_TAIL))
            row.update(self.supervisor.manager.venvs.details(child.spec))
            data["modules"] = [row]
        return control.reply(data)

    def cmd_logs(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        """The last `lines` lines of module `name`'s log (or `app`, the supervisor's): what
        `logs HOST/NAME` shows of another host's module."""
        name, count = request.get("name"), request.get("lines", 20)
        children = self.supervisor.manager.children
        if name != "app" and (not isinstance(name, str) or name not in children):
            return control.failure(self._unknown(name), {"kind": "usage"})
        if not isinstance(count, int) or not 0 <= count <= _LOGS_MAX_LINES:
            return control.failure(f"lines: expected 0 to {_LOGS_MAX_LINES}, got {_shown(count)}")
        # Where it logs since it started: a reload's new `logging.directory` waits for `up`.
        path = self.supervisor.logs / "app.log" if name == "app" else children[name].log.path
        try:
            lines = last_lines(path, count, _LOGS_MAX_BYTES)
        except OSError as exc:  # a FIFO or a device in its place, unreadable
            return control.failure(f"{path}: cannot read it: {exc.strerror or exc}")
        return control.reply({"name": name, "file": str(path), "lines": lines})

    def cmd_bus_client(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        """What a CLI needs to join the bus as a client (`events`): the CURVE keys of a tcp bus,
        or None. Only the owner can reach this socket; never printed."""
        return control.reply(self.supervisor.bus_client())

    def cmd_wait_started(self, identity: bytes, request: dict[str, Any]) -> None:
        """Answer once every module is running or has failed to start at least once (with one
        waiter for all: its status is built once a turn, however many wait)."""
        self.supervisor.wait_for(identity, self._all_settled)

    def _all_settled(self) -> dict[str, Any] | None:
        return control.reply(self.status_data()) if self.supervisor.manager.settled() else None

    def cmd_restart(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any] | None:
        sup, manager = self.supervisor, self.supervisor.manager
        name = request.get("name")
        child = manager.children.get(name) if isinstance(name, str) else None
        if manager.shutting_down:
            return control.failure("the supervisor is shutting down")
        if child is None and isinstance(name, str):
            if request.get("graceful") is True and manager.config.module(name) is not None:
                return control.failure(
                    f"restart --graceful takes one instance ({name}#K); `restart {name}` restarts "
                    "its instances one at a time, so the pool loses at most one meanwhile",
                    {"kind": "usage"},
                )
            return self.group_restart(identity, name)  # every instance, one by one
        if child is None:
            return control.failure(self._unknown(name), {"kind": "usage"})
        if being_removed(manager.children, child):
            return control.failure(f"{child.name} is being removed: a reload took it out")
        if request.get("graceful") is True and child.state is ChildState.RUNNING:
            return self.graceful_restart(identity, child)
        generation = child.spawns
        manager.restart(child, release=True)  # an operator's: a module kept stopped starts too
        sup.wait_for(identity, lambda: self._restarted(child, generation))
        return None

    def _restarted(
        self, child: ManagedChild, generation: int, what: str = "restart"
    ) -> dict[str, Any] | None:
        if being_removed(self.supervisor.manager.children, child):
            return control.failure(f"{child.name} was removed meanwhile: a reload took it out")
        if child.spawns > generation and child.state is ChildState.RUNNING:
            return control.reply({"name": child.name, "pid": child.pid})
        if child.spawns > generation and child.state is ChildState.DONE:  # a job that finished
            return control.reply({"name": child.name, "pid": None, "done": True})
        settled_down = child.state in (ChildState.FAILED, ChildState.STOPPED, ChildState.DONE)
        if child.failed_spawn > generation or (child.spawns > generation and settled_down):
            cause = child.last_exit.cause() if child.last_exit else child.state.value
            what = "did not start" if child.failed_spawn > generation else "stopped right after"
            return control.failure(f"{child.name} {what}: {cause}")
        manager = self.supervisor.manager
        building = manager.venvs.preparing(child.spec)  # a restart waits for it
        if child.state is ChildState.WAITING and not building and not manager.waits_a_moment(child):
            return control.failure(f"{child.name} is waiting: {child.why}")
        if child.life.held == OPERATOR_STOP:  # a `stop` after this request
            return control.failure(f"{child.name}: a later `stop` overtook this {what}")
        if child.life.held:
            return control.failure(f"{child.name} is held stopped: {child.life.held}")
        if child.state is ChildState.FAILED and child.spawns == generation:  # refused to start
            return control.failure(f"{child.name} did not start: {child.why}")
        return None

    def cmd_reload(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        if self.supervisor.manager.shutting_down:
            return control.failure("the supervisor is shutting down; nothing was changed")
        plan, error = self.supervisor.reload(bool(request.get("dry_run")))
        if plan is None:
            return control.failure(error, {"kind": "config"})
        return control.reply(plan.as_dict())

    def cmd_publish(self, identity: bytes, request: dict[str, Any]) -> dict[str, Any]:
        events = self.supervisor.events()
        if events is None:
            return control.failure("the bus is not up yet")
        try:
            event_id = events.send(str(request.get("type")), request.get("data"), "cli")
        except (ValueError, TypeError) as exc:
            return control.failure(str(exc))
        return control.reply({"id": event_id})

    def cmd_down(self, identity: bytes, request: dict[str, Any]) -> None:
        sup = self.supervisor
        timeout = request.get("timeout")
        sup.manager.begin_shutdown(float(timeout) if isinstance(timeout, int | float) else None)

        def stopped() -> dict[str, Any] | None:
            if sup.manager.any_process():
                return None
            return control.reply({"pid": os.getpid()})

        sup.wait_for(identity, stopped)

    def _bad_command(self, cmd: object) -> str:
        known = ", ".join(sorted(n.removeprefix("cmd_") for n in dir(self) if n.startswith("cmd_")))
        if cmd is None:
            return f"malformed request: no 'cmd' (commands: {known})"
        if not isinstance(cmd, str):
            return f"malformed request: 'cmd' must be a string, got {type(cmd).__name__}"
        return f"unknown command {_shown(cmd)} (commands: {known})"

    def _unknown(self, name: object) -> str:
        known = ", ".join(self.supervisor.manager.children) or "none"
        return f"no enabled module named {_shown(name)} (modules: {known})"


def _shown(value: object, limit: int = 60) -> str:
    """`value` as a reply may quote it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
