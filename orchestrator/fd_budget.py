"""The supervisor's open-files budget.

libzmq aborts the whole process when its ipc listener's `accept()` finds no descriptor left
(`Too many open files (src/ipc_listener.cpp)`): it cannot be caught, only kept from happening. So
the supervisor admits no more module processes than its open-files limit holds with room to
spare (`processes_within`, folded into the process limit by `resources.compute_limits`), and
stops listening for control clients while its descriptors run short (`ControlGuard`).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from collections.abc import Callable, Mapping
from typing import Any

import zmq

log = logging.getLogger(__name__)
BindFunction = Callable[["zmq.Socket[bytes]", str], object]  # the listener's (listeners.rebind)

# Descriptors the supervisor holds for each module, running or not: its log file.
FDS_PER_MODULE = 1
# And for each module process: its output pipe and its child-channel connection, and its
# standby's output pipe, "go" pipe and connection (measured: 145 with 20 modules, 31 with one).
FDS_PER_PROCESS = 5
# The supervisor's own, whatever the modules: its sockets and ZeroMQ's eventfds, its logs and
# locks, the broker's output, the fork server's link (measured: 25).
FDS_BASE = 32
# Kept free for control clients (each `orchestrator` command holds a connection while it waits)
# and short-lived descriptors (a fork's pipe, a status reading /proc, hot reload's watches).
FDS_HEADROOM = 40
# While fewer than GUARD_LOW descriptors are free, control clients are refused (the listener is
# closed: they wait in their reconnect); it listens again once GUARD_HIGH are free, or some were
# closed since, or after GUARD_MAX_REFUSAL seconds (what holds them is not the clients then).
GUARD_LOW = 8
GUARD_HIGH = 16
GUARD_MAX_REFUSAL = 2.0
GUARD_LOG_INTERVAL = 60.0
GUARD_RECHECK = 0.05  # seconds between counts while refusing, or while fewer than GUARD_WATCH
GUARD_WATCH = 64  # are free: a burst of clients is accepted by ZeroMQ's thread, not our loop


def open_files_limit() -> int | None:
    """The soft limit on this process's open files (None: unlimited)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def processes_within(open_files: int, modules: int) -> int:
    """How many module processes an open-files limit holds with `modules` modules (or
    instances) in the config, the supervisor's own descriptors and the headroom for control
    clients kept aside (at least 1)."""
    spare = open_files - FDS_BASE - FDS_HEADROOM - modules * FDS_PER_MODULE
    return max(1, spare // FDS_PER_PROCESS)


def files_needed(processes: int, modules: int) -> int:
    """The open-files limit that `processes` module processes of `modules` modules need."""
    return FDS_BASE + FDS_HEADROOM + modules * FDS_PER_MODULE + processes * FDS_PER_PROCESS


def files_short(limits: Mapping[str, Any], wanted: int) -> str | None:
    """The warning, once, when the open-files limit is what holds some of `wanted` module
    processes back (`limits`: `resources.Limits.as_dict()`, as `status --json` shows it)."""
    held = limits.get("max_processes")
    if limits.get("bound_by") != "open files" or not isinstance(held, int) or wanted <= held:
        return None
    return (
        f"the open-files limit {limits.get('open_files')} holds {held} of the {wanted} module"
        f" processes; the rest wait. Raise it to {files_needed(wanted, wanted)} or more (`ulimit -n`,"
        " systemd's LimitNOFILE=, docker's --ulimit nofile=)"
    )


def open_count(limit: int) -> int | None:
    """How many descriptors this process holds now (None if it cannot be told); `limit` if
    there is none left to count them with."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # listdir's own
    except OSError as exc:
        return limit if exc.errno in (errno.EMFILE, errno.ENFILE) else None


class ControlGuard:
    """Closes the control socket's listener while fewer than `GUARD_LOW` descriptors are free,
    and binds it again soon after (see GUARD_*): a flood of clients then waits in the clients
    (ZeroMQ reconnects every 100 ms) instead of taking the supervisor down. Connections already
    accepted keep being answered."""

    def __init__(
        self, sock: zmq.Socket[bytes], endpoint: str, limit: int | None, bind: BindFunction
    ) -> None:
        self._sock = sock
        self._endpoint = endpoint
        self._limit = limit
        self._bind = bind
        self.refusing = False
        self._refused: tuple[float, int] | None = None  # since when, with how many in use
        self._recheck_at: float | None = None
        self._warned_at: float | None = None

    def check(self, now: float) -> None:
        """Count the descriptors (after the control socket was busy, or when a recheck is due)
        and close or open the listener to match."""
        if self._limit is None or (self._recheck_at is not None and now < self._recheck_at):
            return
        used = open_count(self._limit)
        if used is None:
            return
        free = self._limit - used
        if self._refused is None and free < GUARD_LOW:
            try:
                self._sock.unbind(self._endpoint)
            except zmq.ZMQError as exc:
                log.warning("cannot stop listening for control clients: %s", exc)
                return
            self._refused = (now, used)
            quiet = self._warned_at is not None and now - self._warned_at < GUARD_LOG_INTERVAL
            if not quiet:  # a flood refused again and again is one line a minute
                self._warned_at = now
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "%d of %d open files in use: new control clients wait",
                used,
                self._limit,
            )
        elif self._refused is not None and (
            free >= GUARD_HIGH
            or used < self._refused[1]
            or now - self._refused[0] >= GUARD_MAX_REFUSAL
        ):
            try:
                self._bind(self._sock, self._endpoint)
            except (zmq.ZMQError, OSError) as exc:
                log.warning("cannot listen for control clients again yet: %s", exc)
            else:
                self._refused = None
                log.debug(
                    "%d of %d open files in use: control clients are taken again", used, self._limit
                )
        self.refusing = self._refused is not None
        watch = self.refusing or free < GUARD_WATCH
        self._recheck_at = now + GUARD_RECHECK if watch else None

    @property
    def watching(self) -> bool:
        """Whether to count again at `next_deadline`, whatever the control socket does."""
        return self._recheck_at is not None

    def next_deadline(self) -> float | None:
        """When to count again while refusing, or while few descriptors are free."""
        return self._recheck_at
