"""A standby: a module process forked ahead of its next start, waiting to take over.

Moving a process into a cgroup makes the kernel wait for an RCU grace period (about 10 ms here,
when no other move happened just before), and a restart used to pay it between the crash and the
module running again. A standby pays it in advance: the fork server forks it with the module's
environment, it joins the module's next cgroup (v2 and v1) at once and then waits, having run no
module code, until the supervisor writes "go" on its pipe. Then it is the module's new process,
as if forked at that moment: the shim says hello, connects the bus, imports the module (its code
as it is now, not as it was when the standby was made) and calls `initialize()`.

Where the supervisor says where the bus is (`bus`, an ipc bus), the standby also makes its
ZeroMQ context, its channel to the supervisor and its bus sockets before it waits, so that
ZeroMQ has connected them by the time it takes over (`PREPARED`): about 4 ms of a restart. The
shim still says hello, gets the spec and proves the bus with a probe as any new process does;
sockets made for other settings than the spec's are closed and made anew. It also compiles the
module's source (`PRECOMPILED`), which the loader takes only if the file still holds those very
bytes at "go".

The supervisor closing its end of the pipe without a word, or the supervisor's death (the
lifeline's end of file), ends the standby quietly.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import CodeType
from typing import Any, NamedTuple

import zmq

from module_sdk import protocol
from module_sdk.channel import SupervisorChannel
from module_sdk.connect import bus_sockets
from module_sdk.limits import ENV_CGROUPS_V1, EXIT_LIMITS_FAILED, LimitsError, join_v1

COMM_PREFIX = "standby:"  # its name in ps -o comm, until it takes over as `mod:NAME`


class Prepared:
    """What a standby made while it waited: a ZeroMQ context, its channel to the supervisor, and
    its bus sockets with the settings they were made for (`take_bus` hands them out once)."""

    def __init__(self, env: Mapping[str, str], bus: Mapping[str, Any]) -> None:
        self.bus = (
            str(bus["xsub"]),
            str(bus["xpub"]),
            int(bus["high_water_mark"]),
            int(bus["max_message_size"]),
        )
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            self.channel = SupervisorChannel(
                self.context,
                env[protocol.ENV_CHANNEL],
                env[protocol.ENV_MODULE],
                env[protocol.ENV_CHANNEL_ID],
            )
            self._sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]] | None = bus_sockets(
                self.context, *self.bus, None
            )
        except BaseException:  # none of it half made: the shim makes its own
            self.context.destroy(linger=0)
            raise

    def take_bus(
        self, settings: tuple[str, str, int, int], curve: object
    ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]] | None:
        """The bus sockets, if they were made for `settings` (xsub, xpub, high-water mark, max
        message size) without CURVE; else None, and they are closed."""
        sockets, self._sockets = self._sockets, None
        if sockets is None or (settings == self.bus and curve is None):
            return sockets
        for socket in sockets:
            socket.close(linger=0)
        return None


PREPARED: Prepared | None = None  # this process's, once it is a standby that takes over


class Precompiled(NamedTuple):
    """The module's source file as the standby read and compiled it (see `precompile`)."""

    path: str
    source: bytes
    code: CodeType


PRECOMPILED: Precompiled | None = None  # taken by the loader if the source is still this


def precompile(path: str) -> Precompiled | None:
    """Compile the module's file (a package's `__init__.py`) as an import would; None if that
    fails or warns (the import then compiles it, and says so, itself)."""
    file = Path(path)
    if file.is_dir():
        file = file / "__init__.py"
    try:
        source = file.read_bytes()
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            code = compile(source, str(file), "exec", dont_inherit=True)
    except (OSError, SyntaxError, ValueError):
        return None
    return None if said else Precompiled(str(file), source, code)


def wait_for_go(
    go: int, env: Mapping[str, str], ahead: Mapping[str, Any] | None = None
) -> int | None:
    """Join the module's cgroups named in `env` (the module's environment, not installed yet),
    then block until the supervisor's word on `go`: None to run the module now, else the code to
    exit with: 0 if the supervisor dropped this standby or is gone, EXIT_LIMITS_FAILED if a
    cgroup could not be joined (the reason on stderr; the module's next start is then a plain
    fork, which reports the failure as it always does; and a "go" that raced with this exit
    counts as a failed start, not as a module that exited 0)."""
    try:
        join_v1(env.get(ENV_CGROUPS_V1, ""))
        cgroup = env.get(protocol.ENV_CGROUP)
        if cgroup:
            Path(cgroup, "cgroup.procs").write_text(f"{os.getpid()}\n")
    except (LimitsError, OSError) as exc:
        print(f"standby: cannot join the module's cgroups: {exc}", file=sys.stderr, flush=True)
        return EXIT_LIMITS_FAILED
    global PREPARED, PRECOMPILED
    ahead = ahead or {}
    source, bus = ahead.get("source"), ahead.get("bus")
    PRECOMPILED = precompile(source) if isinstance(source, str) else None
    try:
        PREPARED = Prepared(env, bus) if bus else None
    except (zmq.ZMQError, KeyError, TypeError, ValueError) as exc:  # it connects after "go"
        print(f"standby: cannot connect ahead: {exc}", file=sys.stderr, flush=True)
    watched = [go]
    lifeline = env.get(protocol.ENV_LIFELINE)
    if lifeline:
        watched.append(int(lifeline))
    try:
        while True:
            try:
                readable, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if go in readable and os.read(go, 1) == protocol.STANDBY_GO:
                return None
            return 0  # dropped (its pipe closed), or the lifeline's end of file
    finally:
        with contextlib.suppress(OSError):
            os.close(go)
