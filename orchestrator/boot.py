"""What a supervisor sets up before anything else: the subreaper flag, systemd's notify socket,
the lifeline pipe and the fork server.

The fork server's template is made here, first thing, before the supervisor reads its config: a
fork of this process (module_sdk/template_fork.py) when it has one thread and its environment
as it started, which only imports the SDK's modules it lacks; else an interpreter of its own
(`python -m module_sdk.forkserver`). Either way its boot overlaps the supervisor's own (loading
the config, importing the rest, binding sockets) instead of following it, and the config's
secrets are never in its memory, which every module inherits. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from module_sdk.process import PR_SET_CHILD_SUBREAPER, prctl
from orchestrator.forkserver import ForkServer, ForkServerError
from orchestrator.systemd import SystemdNotify

if TYPE_CHECKING:
    from orchestrator.helper_spawn import Popen, Started

log = logging.getLogger(__name__)


class Boot:
    """The lifeline pipe and the fork server, owned by whoever closes it (the supervisor)."""

    def __init__(self) -> None:
        # First, so that even the template's descendants inherit it on kernels before 4.11:
        # orphaned descendants (each forked module, a module's daemonised child) come to us.
        self.subreaper = prctl(PR_SET_CHILD_SUBREAPER, 1)
        # Before the template starts: neither it nor the modules may inherit the notify socket.
        self.systemd = SystemdNotify()
        # libzmq aborts the process on EMFILE in some paths: allow what the hard limit allows.
        self.fd_limit = raise_fd_limit()
        # Children get the read end; only we hold the write end, so our death is their EOF.
        self.lifeline, self._lifeline_write = os.pipe()
        self.forkserver = ForkServer(self.lifeline)
        # The broker started before the supervisor was there (see `take_broker`): spawned, or
        # asked of the fork server (what `receive` takes, and its command line).
        self.early_broker: Popen | tuple[int, list[str]] | None = None
        try:
            self.forkserver.start()
        except BaseException:
            self.close()
            raise

    def take_broker(self, argv: Sequence[str]) -> Started | None:
        """The broker started early (orchestrator/broker_process.py `prestart`), if it is the
        one to run (`argv`); else None: one started early for other arguments is stopped, and a
        fork that failed is logged (the supervisor then spawns one)."""
        early, self.early_broker = self.early_broker, None
        started: Started | None
        if isinstance(early, tuple):
            pending, args = early
            try:
                pid, stdout = self.forkserver.receive(pending)
            except (OSError, ForkServerError) as exc:
                log.warning("the broker could not be forked early (%s)", exc)
                return None
            from orchestrator.helper_spawn import ForkedHelper  # noqa: PLC0415  (see above)

            started = ForkedHelper(pid, stdout, args)
        else:
            started = early
        if started is not None and list(started.args) != list(argv):  # type: ignore[arg-type]
            _stop(started)
            return None
        return started

    def close(self) -> None:
        """Stop the template (and a broker started early that nobody took) and close the pipe;
        safe to call more than once."""
        if self.early_broker is not None:
            with contextlib.suppress(OSError, ForkServerError):
                _stop(self.take_broker(()))
        self.forkserver.close()
        self.systemd.close()
        for fd in (self.lifeline, self._lifeline_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.lifeline = self._lifeline_write = -1

    def __enter__(self) -> Boot:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


def _stop(helper: Started | None) -> None:
    """SIGKILL a helper nobody took, and reap it (a fork may not be our child yet: then the
    loop's reaper, or init, does)."""
    if helper is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(helper.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(helper.pid, 0)
    helper.returncode = -signal.SIGKILL
    if helper.stdout is not None:
        helper.stdout.close()
