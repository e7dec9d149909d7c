"""A standby: a module process forked ahead of its next start, waiting to take over.

Moving a process into a cgroup makes the kernel wait for an RCU grace period (about 10 ms here,
when no other move happened just before), and a restart used to pay it between the crash and the
module running again. A standby pays it in advance: the fork server forks it with the module's
environment, it joins the module's next cgroup (v2 and v1) at once and then waits, having run no
module code, until the supervisor writes "go" on its pipe. Then it is the module's new process,
as if forked at that moment: the shim says hello, connects the bus, imports the module (its code
as it is now, not as it was when the standby was made) and calls `initialize()`.

The supervisor closing its end of the pipe without a word, or the supervisor's death (the
lifeline's end of file), ends the standby quietly.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Mapping
from pathlib import Path

from module_sdk import protocol
from module_sdk.limits import ENV_CGROUPS_V1, EXIT_LIMITS_FAILED, LimitsError, join_v1

GO = b"g"
COMM_PREFIX = "standby:"  # its name in ps -o comm, until it takes over as `mod:NAME`


def wait_for_go(go: int, env: Mapping[str, str]) -> int | None:
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
            if go in readable and os.read(go, 1) == GO:
                return None
            return 0  # dropped (its pipe closed), or the lifeline's end of file
    finally:
        with contextlib.suppress(OSError):
            os.close(go)
