"""The only place that starts, signals and reaps module processes.

Each child is forked from the warm template (orchestrator/forkserver.py) or is a new
`python -m module_sdk`, in its own process group (`process_group=0`), with stdout and
stderr on one pipe for the supervisor to capture. Reaping is one non-blocking `waitpid(-1)` loop run
from the main loop whenever it wakes, so it also reaps processes it does not know: the strays of
modules, which `kill_strays` finds among our children once their module process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from module_sdk import protocol
from module_sdk.limits import ENV_LIMITS
from module_sdk.process import children_of, kill_tree
from orchestrator.config import ModuleSpec
from orchestrator.forkserver import (
    ForkRefusedError,
    ForkServer,
    ForkServerBootingError,
    ForkServerError,
)
from orchestrator.isolation import GRANTS, limits_env
from orchestrator.record import record

log = logging.getLogger(__name__)

# Blocked while forking so that no handler of ours runs in a child before it execs; the shim
# unblocks them when it installs its own.
_BLOCK_WHILE_SPAWNING = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class ModuleProcess:
    """A module process, however it was started: its pid and the read end of its output pipe."""

    pid: int
    stdout: BinaryIO
    popen: subprocess.Popen[bytes] | None = None  # for spawned ones, told of the reap
    channel_id: bytes = b""  # the routing id only it speaks with on the child channel
    gone: bool = False  # reaped: its pid may be another process's now

    def reaped(self, code: int) -> None:
        """Record the exit status we reaped, so that Popen never waits for it itself."""
        self.gone = True
        if self.popen is not None:
            self.popen.returncode = code


def module_env(
    name: str, channel_endpoint: str, extra_env: Mapping[str, str], lifeline: int
) -> dict[str, str]:
    """The environment of a module process. `lifeline` is the read end of a pipe whose write end
    only the supervisor holds: the child sees end-of-file on it the moment the supervisor dies."""
    env = dict(os.environ)
    env.update(extra_env)
    env[protocol.ENV_MODULE] = name
    env[protocol.ENV_CHANNEL] = channel_endpoint
    env[protocol.ENV_LIFELINE] = str(lifeline)
    env[protocol.ENV_SUPERVISOR_PID] = str(os.getpid())
    # Its name, as the channel's messages are read, and a secret: a module run as another user
    # cannot read another's environment, so it cannot speak for it (restart it as unhealthy).
    env[protocol.ENV_CHANNEL_ID] = new_channel_id(name)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def new_channel_id(name: str) -> str:
    """A routing id for one module process on the child channel: its name, and a secret."""
    return f"{name}:{os.urandom(12).hex()}"


def spawn_module(
    name: str, cwd: Path, env: Mapping[str, str], lifeline: int, python: Path | None = None
) -> ModuleProcess:
    """Start a fresh interpreter (`python`, by default the supervisor's) running the shim for
    module `name`, in a new process group."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCK_WHILE_SPAWNING)
    try:
        popen = subprocess.Popen(
            [str(python or sys.executable), "-m", "module_sdk", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            process_group=0,
            close_fds=True,
            pass_fds=(lifeline,),
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert popen.stdout is not None
    stdout, popen.stdout = popen.stdout, None  # the caller owns the pipe now
    return ModuleProcess(popen.pid, stdout, popen)  # type: ignore[arg-type]


@record
class Launch:
    """A module process to start: its module, environment (before limits), working directory,
    and the python of its own venv, if it has one."""

    spec: ModuleSpec
    env: Mapping[str, str]
    cwd: Path
    python: Path | None = None

    @property
    def forks(self) -> bool:
        """Forked from the warm template; else a fresh interpreter (`start_method: spawn`,
        interpreter settings in its env, or a venv of its own)."""
        return (
            self.python is None
            and self.spec.supervision.start_method == "fork"
            and not needs_new_interpreter(self.spec)
        )


def launch_modules(
    launches: Sequence[Launch], lifeline: int, forkserver: ForkServer
) -> list[ModuleProcess | OSError]:
    """Start module processes, in order: those that fork, from the warm template all at once
    (`ForkServer.fork_many`); the others, and any the fork server fails, spawned (not one the OS
    refused, EAGAIN or ENOMEM: a spawn would be refused too). Each result is the process, or the
    OSError that kept it from starting."""
    results: list[ModuleProcess | OSError | None] = [None] * len(launches)
    envs: list[Mapping[str, str]] = []
    for index, launch in enumerate(launches):
        try:
            envs.append(with_limits(launch.spec, launch.env))
        except OSError as exc:
            envs.append(launch.env)
            results[index] = exc
    forking = [i for i, launch in enumerate(launches) if results[i] is None and launch.forks]
    # A module run as another user is forked on its own: a batch's intermediate holds every
    # module's request (their environments, secrets among them), and each process it forks is
    # a copy of it, that module's too once it has dropped to its user.
    alone = [i for i in forking if _another_user(launches[i].spec)]
    together = [i for i in forking if i not in alone]
    forked_all: list[tuple[int, tuple[int, BinaryIO] | ForkServerError]] = []
    if together:
        requests = [(launches[i].spec.name, envs[i], launches[i].cwd) for i in together]
        forked_all += zip(together, forkserver.fork_many(requests), strict=True)
    for index in alone:
        try:
            forked_all.append(
                (
                    index,
                    forkserver.fork(launches[index].spec.name, envs[index], launches[index].cwd),
                )
            )
        except ForkServerError as exc:
            forked_all.append((index, exc))
    for index, forked in forked_all:
        if isinstance(forked, ForkRefusedError):  # the host's: a spawn would be refused too
            results[index] = forked.as_os_error()
        elif isinstance(forked, ForkServerBootingError):
            log.info("%s: %s", launches[index].spec.name, forked)
        elif isinstance(forked, ForkServerError):
            log.error("%s: %s", launches[index].spec.name, forked)
            # The fork may have happened all the same (an intermediate killed before it
            # answered): that process holds this routing id, and the channel would give the
            # spawned one's messages to nobody (it waited for its spec, then exited 73).
            name = launches[index].spec.name
            envs[index] = {**envs[index], protocol.ENV_CHANNEL_ID: new_channel_id(name)}
        else:
            results[index] = ModuleProcess(*forked)
    started: list[ModuleProcess | OSError] = []
    for index, launch in enumerate(launches):
        result = results[index]
        if result is None:
            try:
                result = spawn_module(
                    launch.spec.name, launch.cwd, envs[index], lifeline, launch.python
                )
            except OSError as exc:
                result = exc
            except ValueError as exc:  # what exec() cannot take (an environment): this one fails
                result = OSError(errno.EINVAL, str(exc))
        if not isinstance(result, OSError):
            result.channel_id = envs[index][protocol.ENV_CHANNEL_ID].encode()
        started.append(result)
    return started


def _another_user(spec: ModuleSpec) -> bool:
    return spec.limits.user is not None or spec.limits.group is not None


def with_limits(spec: ModuleSpec, env: Mapping[str, str]) -> Mapping[str, str]:
    """`env` with what the module process applies to itself (module_sdk/limits.py); a module
    run as another user is let into the run directory first."""
    channel = env.get(protocol.ENV_CHANNEL, "")
    run_dir = Path(channel[len("ipc://") :]).parent if channel.startswith("ipc://") else None
    payload = limits_env(spec, run_dir)
    if payload is None:
        return env
    if spec.limits.user is not None and run_dir is not None:
        try:
            GRANTS.add(run_dir, pwd.getpwnam(spec.limits.user).pw_uid)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot let user {spec.limits.user} reach the sockets in {run_dir} "
                f"(POSIX ACLs): {exc.strerror}",
            ) from None
    return {**env, ENV_LIMITS: payload}


def needs_new_interpreter(spec: ModuleSpec) -> bool:
    """Interpreter settings in the module's env (PYTHONHASHSEED, ...) act only at start-up, which
    a fork of the template has had already; PYTHONPATH the fork server applies itself."""
    return any(key.startswith("PYTHON") and key != "PYTHONPATH" for key in spec.env)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def signal_process(process: ModuleProcess, sig: int) -> None:
    """Send `sig` to the module process alone (a graceful stop: its `shutdown()` stops what it
    started, its shim then what is left, as systemd's KillMode=mixed does). A signal to the whole
    group at once killed a multiprocessing pool's workers under the module's feet, its
    `shutdown()`'s `pool.terminate()` then hung on a lock a dead worker held, until the SIGKILL."""
    if not process.gone:  # reaped: its pid may be another process's now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, sig)


def signal_module(process: ModuleProcess, sig: int) -> None:
    """Send `sig` to a module process's group, and to the process by its pid if it is no longer
    in that group (a module may move itself into any group of the supervisor's session, the
    supervisor's own among them: the signals for its group then missed it, or found no group at
    all, and it could be neither stopped nor restarted). Not a session of its own: until a fork
    had started one it was in the template's group, and stopping the template killed it."""
    signal_group(process.pid, sig)
    if process.gone:
        return  # reaped: its pid may be another process's now
    try:
        moved = os.getpgid(process.pid) != process.pid
    except OSError:  # gone; or (POSIX allows it, Linux does not) in a session we may not ask
        return
    if moved:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, sig)


def reap() -> Iterator[tuple[int, int]]:
    """Yield `(pid, raw wait status)` for every child that has exited, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise
        if pid == 0:
            return
        yield pid, status


def kill_strays(spare: Collection[int]) -> list[int]:
    """SIGKILL every child of ours that is not in `spare` (module processes, the fork server and
    any other process the supervisor started itself), with all its descendants; returns the pids
    killed.

    Each module process is a child subreaper of its own descendants, so a process only becomes our
    child that is not one we started when a module process died and left it: whatever its group,
    session or environment, it is a stray. Any process the supervisor starts and keeps must be in
    `spare`, or the next sweep kills it.
    """
    me = os.getpid()
    found = [pid for pid in children_of(me) if pid not in spare]
    return kill_tree(found, me) if found else []
