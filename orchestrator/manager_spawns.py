"""Starting module processes, as the lifecycle's `Spawn` effect asks: a standby taken over, or a
process forked from the template or spawned; and, inside `starting_together`, the forks of
every module started at once (`up`, a scale up) asked of the template in one request. A part of
`ChildManager`, whose state it uses."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from module_sdk import protocol
from orchestrator import lifecycle as lc
from orchestrator.cgroups import ModuleCgroups
from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig
from orchestrator.fork_requests import HOST_REFUSALS
from orchestrator.forkserver import ForkServer
from orchestrator.handover import Handovers
from orchestrator.module_processes import ModuleProcesses
from orchestrator.processes import Launch, ModuleProcess, launch_modules, module_env
from orchestrator.standby import Standbys
from orchestrator.venv import Environments

Deferred = tuple[ManagedChild, lc.Spawn, Launch]


class ModuleSpawns:
    """The starts of `ChildManager`."""

    config: AppConfig
    children: dict[str, ManagedChild]
    cgroups: ModuleCgroups
    forkserver: ForkServer
    processes: ModuleProcesses
    handovers: Handovers
    standbys: Standbys
    venvs: Environments
    shutting_down: bool
    _channel_endpoint: str
    _lifeline: int
    # The forks of `starting_together`, asked for when it ends; None outside it.
    _together: list[Deferred] | None = None
    # Modules of the batch being launched whose process is not recorded yet.
    _in_flight: frozenset[str] | set[str] = frozenset()

    if TYPE_CHECKING:

        def handle(self, child: ManagedChild, event: lc.Event) -> None: ...

    @contextlib.contextmanager
    def starting_together(self) -> Iterator[None]:
        """Within it, each module process that would be forked from the template waits, and at
        its end they are all forked with one request (`ForkServer.fork_many`): one round trip and
        one intermediate process for all of them, instead of one of each per module (ten forks
        one after the other took 70-85 ms of an `up`). Each is still decided, limited and logged
        as a start of its own."""
        if self._together is not None:  # nested: the outer one forks them
            yield
            return
        self._together = []
        try:
            yield
        finally:
            try:
                while self._together:  # what handling a batch starts is the next batch
                    self._launch_together()
            finally:
                self._together = None

    def _launch_together(self) -> None:
        assert self._together is not None
        together, self._together = self._together, []
        self._in_flight = {child.name for child, _, _ in together}
        launched = launch_modules(
            [launch for _, _, launch in together], self._lifeline, self.forkserver
        )
        results = [
            (child, effect, process)
            for (child, effect, _), process in zip(together, launched, strict=True)
        ]
        # Every process is recorded before any failure is handled: handling one may start the
        # modules that wait (`start_waiting`), which must see these started, and count them.
        results.sort(key=lambda result: isinstance(result[2], OSError))  # stable: in order
        for child, effect, process in results:
            self._in_flight.discard(child.name)
            self._launched(child, effect, process)

    def starting(self) -> int:
        """Module processes decided but not recorded yet (`starting_together`)."""
        return len(self._together or ()) + len(self._in_flight)

    def deferred(self, child: ManagedChild) -> bool:
        """Whether `child`'s start is decided and on its way (`starting_together`)."""
        return child.name in self._in_flight or any(c is child for c, _, _ in self._together or ())

    def _spawn(self, child: ManagedChild, effect: lc.Spawn) -> None:
        if self.deferred(child):  # decided twice before its process is there: once is enough
            return
        child.reported_error, child.counters, child.busy_for = "", {}, 0.0
        process: ModuleProcess | OSError
        try:
            launch = self._launch(child)
        except OSError as exc:
            process = exc
        else:
            if isinstance(launch, ModuleProcess):
                process = launch
            elif self._together is not None and launch.forks:
                self._together.append((child, effect, launch))
                return
            else:
                (process,) = launch_modules([launch], self._lifeline, self.forkserver)
        self._launched(child, effect, process)

    def _launched(
        self, child: ManagedChild, effect: lc.Spawn, process: ModuleProcess | OSError
    ) -> None:
        if isinstance(process, OSError):
            host = process.errno in HOST_REFUSALS  # no task slot, no memory: the host's, for now
            failed = lc.SpawnFailed(
                time.monotonic(),
                (process.strerror or str(process)) if host else str(process),
                shutting_down=self.shutting_down,
                jitter=jitter(),
                host=host,
            )
            self.handle(child, failed)
            return
        child.started_wall = time.time()
        self.processes.adopt(child, process)
        self.handle(child, lc.Spawned(time.monotonic(), process.pid, **carried(effect)))

    def _launch_env(self, child: ManagedChild) -> tuple[dict[str, str], Path | None]:
        """The module's environment (before its cgroup's and limits' entries), and the python
        of its own venv, if it has one."""
        env = module_env(child.name, self._channel_endpoint, child.spec.env, self._lifeline)
        python, venv_env = self.venvs.launch_env(child.spec, env.get("PATH", ""))
        env.update(venv_env)
        return env, python

    def _launch(self, child: ManagedChild) -> ModuleProcess | Launch:
        """Its standby, if it has one that fits; else what starting its process takes, its
        cgroup made. Raises OSError."""
        env, python = self._launch_env(child)
        if python is not None or self.handovers.busy(child.name):
            self.standbys.drop(child.name)  # a venv's new interpreter; a stand-in's cgroup
        elif (standby := self.standbys.take(child, env)) is not None:
            return standby
        cgroup = self.cgroups.prepare(child.cgroup, child.spec.limits)
        if cgroup is not None:
            env[protocol.ENV_CGROUP] = cgroup
        env.update(self.cgroups.env(child.cgroup))  # cgroup v1 groups, where v2 lacks one
        return Launch(child.spec, env, self.config.config_dir.parent, python)


def carried(effect: lc.TryStart | lc.Spawn) -> dict[str, bool]:
    """What a start carries to its spawn: whether it is announced and counted as a restart."""
    return {"announce": effect.announce, "count": effect.count}


def jitter() -> float:
    """The random draw that spreads a backoff."""
    return random.random()
