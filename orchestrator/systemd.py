"""sd_notify(3) for a supervisor that systemd runs as a `Type=notify` service.

systemd hands the service a datagram socket in `NOTIFY_SOCKET` (a path, or `@name` in the
abstract namespace) and, with `WatchdogSec=`, the interval in `WATCHDOG_USEC`. The supervisor
says `READY=1` once every module has started (or failed to, as `up -d` waits for), a one-line
`STATUS=` as the modules' states change, `WATCHDOG=1` from its loop at half the interval (a loop
that stalls stops pinging, and systemd restarts the service) and `STOPPING=1` when it begins to
stop. The variables are taken out of the environment at once: the modules must not inherit them.
Nothing here blocks: a message the socket does not take is dropped, and the failure logged once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.manager import ChildManager

log = logging.getLogger(__name__)

STATUS_EVERY = 1.0  # seconds between STATUS= updates at most
READY_POLL = 0.1  # seconds between looks at whether every module has started, until READY=1

# (settled, summary, stopping): every module started or failed once, a one-line summary, and
# whether the supervisor is stopping; asked only when a STATUS= may be due.
State = Callable[[], tuple[bool, str, bool]]


class SystemdNotify:
    """The notify socket systemd gave this process, if any (`enabled`)."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        path = environ.pop("NOTIFY_SOCKET", "")
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog: float | None = None  # seconds between pings
        if (
            usec.isascii()
            and usec.isdigit()
            and int(usec) > 0
            and (not pid or pid == str(os.getpid()))
        ):
            self.watchdog = int(usec) / 1e6 / 2
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )
        self.ready = False
        self.stopping = False
        self._status = ""
        self._next_status = 0.0
        self._next_watchdog = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def next_deadline(self) -> float | None:
        """When the loop must wake up for this (a watchdog ping, or a look for READY), or None."""
        if self._sock is None:
            return None
        due = self._next_watchdog if self.watchdog is not None else None
        if not self.ready:
            due = min(due, self._next_status) if due is not None else self._next_status
        return due

    def tick(self, now: float, stopping: bool, state: State) -> None:
        """From the loop, every turn: say what is due (`stopping` at once)."""
        if self._sock is None:
            return
        lines = []
        if self.watchdog is not None and now >= self._next_watchdog:
            lines.append("WATCHDOG=1")
            self._next_watchdog = now + self.watchdog
        if stopping and not self.stopping:
            self.stopping = True
            self._next_status = now
            lines.append("STOPPING=1")
        if now >= self._next_status:
            settled, summary, stopping = state()
            if settled and not self.ready and not stopping:
                self.ready = True
                lines.append("READY=1")
            if summary != self._status:
                self._status = summary
                lines.append(f"STATUS={summary}")
            self._next_status = now + (STATUS_EVERY if self.ready else READY_POLL)
        if lines:
            self.send("\n".join(lines))

    def send(self, message: str) -> None:
        """One datagram to systemd (dropped, and said once, if it cannot be sent now)."""
        if self._sock is None:
            return
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd: cannot notify %s: %s (said once)", self._address, exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def state_of(manager: ChildManager) -> tuple[bool, str, bool]:
    """What `tick` asks: whether every module started (or failed to), `10 modules: 9 running, 1
    failed`, and whether the supervisor is stopping."""
    states = Counter(child.state.value for child in manager.children.values())
    total = sum(states.values())
    parts = [f"{count} {state}" for state, count in sorted(states.items(), key=lambda i: -i[1])]
    summary = f"{total} module{'s' if total != 1 else ''}: {', '.join(parts) or 'none'}"
    if manager.shutting_down:
        summary = f"stopping; {summary}"
    return manager.settled(), summary, manager.shutting_down
