"""Standbys: for each running module that may be restarted, a process forked ahead of time into
the module's next cgroup, waiting to take over (module_sdk/standby.py has its side).

A restart used to fork the module's new process and wait for it to join its cgroup, which costs
an RCU grace period in the kernel (about 10 ms); with a standby, the restart writes "go" on its
pipe instead, and the standby, already in place, goes straight to saying hello. It has run no
module code: the module is imported after "go", as it is then.

A standby is made once the module is running (`supervision.standby: true`, the default, for
modules forked from the template and not scheduled, not `restart: never`), in the cgroup the
module's next process will use (its key alternates between NAME and NAME~spare). It is only
taken if the module's spec and environment are still those it was made with; else it is dropped
and the restart forks as before. Its memory is what a fork of the template writes to, and its
ZeroMQ context and sockets once it has connected ahead (about 2.5 MB here, USS); it is not
counted as a module process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from module_sdk import protocol
from orchestrator.cgroups import ModuleCgroups
from orchestrator.child import ManagedChild
from orchestrator.config import ModuleSpec
from orchestrator.forkserver import ForkServer
from orchestrator.processes import ModuleProcess, needs_new_interpreter, with_limits
from orchestrator.record import record
from orchestrator.rundir import process_stopped
from orchestrator.states import ExitStatus

log = logging.getLogger(__name__)

SPARE_CGROUP = "~spare"  # the second cgroup key of a module, besides its name
_SAID = 4096  # bytes of a standby's own output kept for the log line of its early exit

WatchExit = Callable[[int, Callable[[int], None] | None], None]


@record
class Standby:
    """One waiting process: its pid, output pipe, the write end of its go pipe, and what it was
    made for."""

    pid: int
    stdout: BinaryIO
    go: int
    cgroup: str  # the cgroup key it joined
    spec: ModuleSpec
    env: Mapping[str, str]  # the module's environment, before its cgroup's and limits' entries

    def close(self) -> None:
        """Drop it: without a word on its pipe it exits by itself (it runs nothing of the
        module's); SIGKILL too, in case it is stopped."""
        with contextlib.suppress(OSError):
            os.close(self.go)
        self.stdout.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGKILL)


def wanted(spec: ModuleSpec) -> bool:
    """Whether a module of `spec` keeps a standby while it runs (its own venv aside, which the
    caller knows)."""
    supervision = spec.supervision
    return (
        supervision.standby
        and supervision.start_method == "fork"
        and supervision.restart != "never"
        and spec.schedule is None
        and not needs_new_interpreter(spec)
    )


def spare_cgroup(child: ManagedChild) -> str:
    """The cgroup key the module's next process uses: the one its current process does not.
    (A graceful restart's stand-in takes NAME~next; no standby is kept meanwhile.)"""
    spare = child.name + SPARE_CGROUP
    return child.name if child.cgroup == spare else spare


class Standbys:
    """The standby of each module that has one, by module name."""

    def __init__(
        self, *, forkserver: ForkServer, cgroups: ModuleCgroups, watch_exit: WatchExit
    ) -> None:
        self._forkserver = forkserver
        self._cgroups = cgroups
        self._watch_exit = watch_exit
        self._by_name: dict[str, Standby] = {}
        # Where an ipc bus is (xsub, xpub, high_water_mark, max_message_size), for standbys to
        # connect ahead; None: they connect once they take over (a tcp bus, with its keys).
        self.bus: dict[str, object] | None = None

    def pid(self, name: str) -> int | None:
        standby = self._by_name.get(name)
        return standby.pid if standby is not None else None

    def make(self, child: ManagedChild, env: Mapping[str, str], cwd: Path) -> None:
        """Fork a standby for `child` (running, with `env` as its next process's environment
        before cgroup and limits), unless it has one. A failure is logged and leaves it
        without: its next start forks as before."""
        if child.name in self._by_name or not self._forkserver.booted:
            return  # without a template that is ready: made once it is (`became_ready`)
        key = spare_cgroup(child)
        full = dict(env)
        cgroup = self._cgroups.prepare(key, child.spec.limits)
        if cgroup is not None:
            full[protocol.ENV_CGROUP] = cgroup
        full.update(self._cgroups.env(key))
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            limits = child.spec.limits  # one run as another user or group connects as such
            itself = limits.user is None and limits.group is None and limits.filesystem is None
            ahead: dict[str, object] = {"source": str(child.spec.path)}
            if itself and self.bus is not None:
                ahead["bus"] = self.bus
            pid, stdout = self._forkserver.fork(
                child.name, with_limits(child.spec, full), cwd, go=read_end, ahead=ahead
            )
        except Exception as exc:  # whatever it is, the module runs on; its next start forks
            os.close(write_end)
            log.warning("%s: no standby (%s); its next start forks anew", child.name, exc)
            return
        finally:
            os.close(read_end)
        standby = Standby(pid, stdout, write_end, key, child.spec, dict(env))
        self._by_name[child.name] = standby
        self._watch_exit(pid, lambda raw: self._exited(child.name, standby, raw))
        log.debug("%s: standby ready to take over (pid %d, cgroup %s)", child.name, pid, key)

    def take(self, child: ManagedChild, env: Mapping[str, str]) -> ModuleProcess | None:
        """Hand `child`'s start to its standby: its process, now running the module, in the
        cgroup it joined (set on `child`); None if it has none fit for `env` and its spec."""
        standby = self._by_name.pop(child.name, None)
        if standby is None:
            return None
        self._watch_exit(standby.pid, None)
        if (
            standby.spec != child.spec
            or _without_id(standby.env) != _without_id(env)
            or standby.cgroup == child.cgroup
        ):
            log.debug("%s: standby (pid %d) out of date; dropped", child.name, standby.pid)
            self._drop(standby)
            return None
        if process_stopped(standby.pid):  # SIGSTOPped: it would hold the start to its timeout
            log.warning("%s: standby (pid %d) is stopped; dropped", child.name, standby.pid)
            self._drop(standby)
            return None
        try:
            os.write(standby.go, protocol.STANDBY_GO)
        except OSError as exc:  # it died just now; its exit is reaped as a stray's
            log.debug("%s: standby (pid %d) gone (%s)", child.name, standby.pid, exc)
            self._drop(standby)
            return None
        os.close(standby.go)
        child.cgroup = standby.cgroup
        channel_id = standby.env.get(protocol.ENV_CHANNEL_ID, "").encode()
        return ModuleProcess(standby.pid, standby.stdout, channel_id=channel_id)

    def drop(self, name: str) -> None:
        """Drop the standby of module `name`, if it has one (it was removed, stopped for good,
        or its next start will differ)."""
        standby = self._by_name.pop(name, None)
        if standby is not None:
            self._watch_exit(standby.pid, None)
            self._drop(standby)

    def close(self) -> None:
        """Drop them all (the supervisor stops)."""
        for name in list(self._by_name):
            self.drop(name)

    def _drop(self, standby: Standby) -> None:
        standby.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(standby.pid, 0)  # at once: SIGKILLed, waiting on a pipe

    def _exited(self, name: str, standby: Standby, raw: int) -> None:
        """The loop reaped a standby before it was taken: forget it, and say why it went if it
        said so (it cannot join the module's cgroups, say)."""
        if self._by_name.get(name) is standby:
            del self._by_name[name]
        said = b""
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(standby.stdout.fileno(), False)
            said = standby.stdout.read(_SAID) or b""
        standby.stdout.close()
        with contextlib.suppress(OSError):
            os.close(standby.go)
        status = ExitStatus.from_wait_status(raw).describe()
        if said.strip():
            text = said.decode("utf-8", "replace").strip().replace("\n", "; ")
            log.warning("%s: its standby (pid %d) left (%s): %s", name, standby.pid, status, text)
        else:  # nobody asked it to (a kill by hand, the OOM killer): its next start forks anew
            log.warning("%s: its standby (pid %d) left (%s)", name, standby.pid, status)


def _without_id(env: Mapping[str, str]) -> dict[str, str]:
    """`env` but its channel id, which is each process's own."""
    return {key: value for key, value in env.items() if key != protocol.ENV_CHANNEL_ID}
