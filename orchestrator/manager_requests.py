"""What operators and reloads ask of a module, as events for the lifecycle: restart (plain,
after a change, graceful), hold and release (`stop NAME` / `start NAME`), and a reload's whole
plan. A part of `ChildManager`, which carries the events out."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig, ModuleSpec, Redactor
from orchestrator.dependents import comes_back, waiting_for
from orchestrator.handover import Handover, Handovers
from orchestrator.output import ModuleLog
from orchestrator.reconcile import ReloadPlan
from orchestrator.resources import Limits
from orchestrator.standby import Standbys
from orchestrator.states import ChildState
from orchestrator.venv import Environments

log = logging.getLogger(__name__)


class ModuleRequests:
    """The requests of `ChildManager`; the state they use is the manager's."""

    config: AppConfig
    limits: Limits
    redactor: Redactor
    children: dict[str, ManagedChild]
    venvs: Environments
    handovers: Handovers
    standbys: Standbys
    _foreground: bool

    if TYPE_CHECKING:

        def handle(self, child: ManagedChild, event: lc.Event) -> None: ...
        def start(self, child: ManagedChild, *, scheduled: bool = False) -> bool: ...
        def starting_together(self) -> AbstractContextManager[None]: ...
        def start_waiting(self) -> None: ...
        def stop(self, child: ManagedChild, *, timeout: float | None = None) -> None: ...
        def _drains(self, child: ManagedChild) -> bool: ...

    def restart(self, child: ManagedChild, *, release: bool = False) -> None:
        """A restart: forget past failures, then stop and start (or just start). A held module
        (`stop NAME`) stays stopped unless `release` (an operator's restart, not a reload's).
        A failed build of its venv is tried again."""
        self.venvs.forget_failure(child.spec)
        restart = lc.RestartRequested(time.monotonic(), release=release, drain=self._drains(child))
        self.handle(child, restart)

    def restart_changed(self, child: ManagedChild) -> None:
        """A reload (or a hot reload) changed the module: restart it, unless it is scheduled and
        not running (nothing to restart: its next run, due or `orchestrator run`, is of the new
        code; a job under way finishes as it began)."""
        if child.spec.schedule is not None and child.state is not ChildState.RUNNING:
            self.venvs.forget_failure(child.spec)
            log.info("%s changed; scheduled, it runs the change at its next run", child.name)
            return
        self.restart(child)

    def graceful_restart(self, child: ManagedChild) -> Handover | str:
        """Start a new process beside the running one; stop the old one once the new one is
        ready (see `orchestrator.handover`). The handover under way, or why not. The new
        process runs on the module's dependencies as they are now: not while they are built."""
        venv = self.venvs.prepare(child.spec)  # a changed requirements.txt starts its build
        if venv.failed is not None:
            return f"{child.name} cannot start a new process: {venv.failed}"
        if venv.waiting is not None:
            return f"{child.name} is {venv.waiting}: restart it gracefully once that is done"
        self.standbys.drop(child.name)  # the stand-in may take the cgroup it waits in
        return self.handovers.begin(child)

    def waits_a_moment(self, child: ManagedChild) -> bool:
        """Whether what holds waiting `child` back goes away on its own: a graceful restart's
        process that is stopping, or dependencies passing through a restart (see `comes_back`);
        not a limit, nor a dependency that only an operator brings back."""
        if self.handovers.left_over(child) is not None:
            return True
        return waiting_for(child, self.children) is not None and comes_back(child, self.children)

    def hold(self, child: ManagedChild, why: str) -> None:
        """Stop the module and keep it stopped until `release` (its dependents follow); a build
        of its venv that only it waits for is cancelled."""
        self.venvs.forget(child.spec.name)
        self.handle(child, lc.HoldRequested(time.monotonic(), why, drain=self._drains(child)))

    def release(self, child: ManagedChild) -> None:
        """Let a held module start again, and start it if nothing holds it back (a failed build
        of its venv is tried again)."""
        self.venvs.forget_failure(child.spec)
        self.handle(child, lc.ReleaseRequested(time.monotonic()))

    def apply_reload(self, config: AppConfig, plan: ReloadPlan, limits: Limits) -> None:
        """Switch to `config`, touching only the modules `plan` names: stop the removed, restart
        the changed, start the added. Every new module exists before any starts, since one may
        depend on a newer one; a module removed and added back before its old process stopped is
        revived, not duplicated."""
        self.config, self.limits = config, limits
        self.redactor.add(config.secrets)
        specs = {spec.name: spec for spec in config.enabled_instances}
        for name in plan.restart:  # first: a removed module is followed by the new edges only
            self.children[name].spec = specs[name]
        for name in plan.stop:
            self.handovers.removed(self.children[name], self.stop)
            self.handle(self.children[name], lc.RemoveRequested(time.monotonic()))
        fresh: list[ManagedChild] = []
        for name in plan.start:
            old = self.children.get(name)
            if old is not None and old.life.intent is lc.Intent.REMOVE:
                old.spec = specs[name]
                self.handle(old, lc.RestartRequested(time.monotonic(), revive=True))
            else:
                fresh.append(self.add(specs[name]))
        for name in plan.restart:
            self.restart_changed(self.children[name])
        with self.starting_together():
            for child in fresh:
                self.start(child)
            self.start_waiting()  # a changed dependency or limit may free a waiting module

    def add(self, spec: ModuleSpec) -> ManagedChild:
        """A new module (from a reload), not started yet."""
        log_file = ModuleLog(spec.name, self.config.logging, self.redactor, echo=self._foreground)
        child = self.children[spec.name] = ManagedChild(spec, log_file)
        return child
