"""The process a module runs in: `python -m module_sdk`, started by the supervisor.

Sequence: say hello on the child channel and receive the spec; connect the bus (and, while a
cold start joins its cgroup, complete the handshake); import the module; call
`initialize(event_bus, config)`; handshake, unless one since its last subscription proved the bus
already (its first publish proves it first), so that its subscriptions have reached the broker
and its events those of the modules already running; start the receiver thread; report ready
(with `ready: manual`, once the module calls `event_bus.ready()`); then send heartbeats, and
call the module's `health()` if it has one (module_sdk.health), until SIGTERM (or the
supervisor's death); call `shutdown()`, then the module's atexit handlers, and exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import cast

import zmq

from module_sdk import forks, protocol, resilience, standby
from module_sdk.bus import HandshakeTimeoutError, ZmqEventBus
from module_sdk.channel import SupervisorChannel
from module_sdk.lifeline import Lifeline
from module_sdk.limits import ENV_CGROUPS_V1, EXIT_LIMITS_FAILED, LimitsError, join_v1
from module_sdk.loader import ModuleLoadError, load_module
from module_sdk.logformat import JsonFormatter
from module_sdk.process import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_PDEATHSIG,
    die_with_parent,
    kill_descendants,
    prctl,
    reap_adopted,
    run_atexit,
    stop_descendants,
)
from module_sdk.serving import Serving
from module_sdk.stopsignals import StopSignals
from module_sdk.undertaker import GRACE, Grace

log = logging.getLogger("module_sdk.shim")

_SPEC_TIMEOUT = 10.0
_LEFTOVER_GRACE = 1.0  # seconds what a module left running has to end after its SIGTERM
_ATEXIT_TIMEOUT = 2.0  # seconds the module's atexit handlers may take at its stop
_REAP_INTERVAL = 1.0  # seconds between looks for zombies adopted as a subreaper
# Zombie children of the module's own making left for its code to wait for (a Popen it polls);
# past this many, the oldest are reaped, so that one that never waits cannot exhaust the pids.
_UNCLAIMED_ZOMBIES = 256
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Child:
    """The state of one shim run; `run()` returns the exit code."""

    def __init__(
        self, name: str, endpoint: str, lifeline: int | None, *, joined: bool = False
    ) -> None:
        self.name = name
        self.log_format = "text"  # until the spec says
        # The supervisor, which is our parent, or will be once a fork server's intermediate
        # process has exited and we have been adopted.
        supervisor = os.environ.get(protocol.ENV_SUPERVISOR_PID)
        self.parent_pid = int(supervisor) if supervisor else os.getppid()
        self.orphan = threading.Event()
        # The supervisor blocked signals around the spawn, and a mask survives exec.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        self.signals = StopSignals()  # SIGTERM, SIGINT and SIGHUP stop it; no other signal
        if lifeline is None and os.getppid() == self.parent_pid:
            # Only without a lifeline: a parent-death signal fires as soon as the supervisor's
            # main thread exits, before its other threads let go of the lifeline, and would beat
            # it (and after a fork server's intermediate exits, it would fire at once).
            die_with_parent(signal.SIGTERM)
        elif lifeline is not None:
            # SIGCONT, harmless however early it comes: a module that someone SIGSTOPped when
            # the supervisor died wakes up to see its lifeline closed and take its tree down.
            prctl(PR_SET_PDEATHSIG, signal.SIGCONT)
        # Readable only at end of file; if the module closes it, the supervisor's process says.
        self.lifeline = Lifeline(lifeline, self.parent_pid) if lifeline is not None else None
        # Joining a cgroup takes milliseconds in the kernel: do it while we say hello, and wait
        # for it before any module code runs, so that everything the module starts is inside.
        # A standby (`joined`) is in its cgroups already: module_sdk/standby.py.
        self.cgroup = os.environ.get(protocol.ENV_CGROUP) or None
        self.cgroups_v1 = os.environ.pop(ENV_CGROUPS_V1, "")  # those limits.py left to us
        self.join_failed = ""  # why a cgroup v1 group (so a limit) could not be joined
        self.joining: threading.Thread | None = None
        if (self.cgroup is not None or self.cgroups_v1) and not joined:
            self.joining = threading.Thread(target=self.join_cgroup, name="cgroup", daemon=True)
            self.joining.start()
        # Its secret, out of the environment that whatever the module starts inherits.
        routing_id = os.environ.pop(protocol.ENV_CHANNEL_ID, f"{name}:{os.getpid()}")
        self.prepared = standby.PREPARED if joined else None  # connected while it waited
        self.precompiled = standby.PRECOMPILED if joined else None  # its source, compiled
        if self.prepared is not None:
            self.context, self.channel = self.prepared.context, self.prepared.channel
        else:
            self.context = zmq.Context()
            self.channel = SupervisorChannel(self.context, endpoint, name, routing_id)
        self.bus: ZmqEventBus | None = None
        self.module: ModuleType | None = None
        self.log_path: str | None = None  # the module's log file, once the spec names it
        self.orphan_noted = threading.Lock()  # taken once: by whoever notices the orphaning
        self.grace = Grace(lambda: self.cgroup)  # started by whoever notices it, too
        # Last: it uses all of the above, at once if the supervisor is gone already.
        threading.Thread(target=self.keep, name="keeper", daemon=True).start()

    def orphaned(self) -> bool:
        if self.orphan.is_set():
            return True
        if self.lifeline is not None:  # exact, even while a fork server's intermediate lives
            return self.lifeline.gone()
        return os.getppid() != self.parent_pid

    def join_cgroup(self) -> None:
        """Move this process into the module's cgroup and its cgroup v1 groups (the supervisor
        created them)."""
        try:
            join_v1(self.cgroups_v1)
        except LimitsError as exc:
            self.join_failed = str(exc)
        if self.cgroup is None:
            return
        try:
            Path(self.cgroup, "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            print(f"{self.name}: cannot join cgroup {self.cgroup}: {exc}", file=sys.stderr)
            self.cgroup = None

    def keep(self) -> None:
        """Watch the supervisor's lifeline pipe: end of file means the supervisor is gone, at
        whatever stage this process is (even inside the module's import or initialize()); if
        the module closes it, watch the supervisor's process instead (module_sdk/lifeline.py).
        Meanwhile, reap the orphans this process adopts as a subreaper once they exit."""
        zombie_since: dict[int, float] = {}
        lifeline, warned = self.lifeline, False
        try:
            while True:
                if lifeline is None:
                    time.sleep(_REAP_INTERVAL)  # a parent-death signal says it (see __init__)
                elif lifeline.gone(_REAP_INTERVAL):
                    break
                if lifeline is not None and lifeline.lost and not warned:
                    warned = True
                    log.warning(
                        "the module closed the supervisor's lifeline (fd %d); watching the "
                        "supervisor's process (pid %d) instead",
                        lifeline.fd,
                        self.parent_pid,
                    )
                reap_adopted(zombie_since, time.monotonic(), _UNCLAIMED_ZOMBIES)
        except OSError:
            return
        self.orphan.set()
        self.note_orphaned()
        log.warning("the supervisor is gone; stopping (%gs grace)", GRACE)
        self.grace.start()
        os.kill(os.getpid(), signal.SIGTERM)  # a running module shuts down gracefully meanwhile

    def note_orphaned(self) -> None:
        """Say in the module's log file, once, that this run ends because the supervisor went
        away. The supervisor wrote our output there; with it gone, nothing reads our pipe, so
        the line goes straight to the file, as the next `up` will find it."""
        if self.log_path is None or not self.orphan_noted.acquire(blocking=False):
            return
        record = logging.LogRecord(
            log.name,
            logging.WARNING,
            __file__,
            0,
            "the supervisor (pid %d) went away without `orchestrator down` (killed, or out of "
            "memory?): this run of %s ends here; what it prints from now on is not captured",
            (self.parent_pid, self.name),
            None,
        )
        line = self.formatter().format(record) + "\n"
        with contextlib.suppress(OSError):
            # Never created, never through a link; and never waited on: a FIFO in its place
            # would keep us alive, orphaned.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
            fd = os.open(self.log_path, flags)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def formatter(self) -> logging.Formatter:
        """How the module's log records are written: `LOG_FORMAT`, or one JSON object a line
        (`logging.format: json`), which the supervisor then passes through as it is."""
        if self.log_format == "json":
            return JsonFormatter(self.name)
        return logging.Formatter(LOG_FORMAT)

    def fail(self, stage: str, message: str, details: str, code: int) -> int:
        log.error("%s: %s%s", stage, message, f"\n{details.rstrip()}" if details else "")
        self.channel.error(stage, message, details)
        return code

    def run(self) -> int:
        spec = self.await_spec()
        if spec is None:
            return protocol.EXIT_ORPHANED
        mismatch = protocol.version_mismatch(spec.get("protocol"))
        if mismatch is not None:
            return self.fail("load", mismatch, "", protocol.EXIT_LOAD_FAILED)
        log_path = spec.get("log")
        self.log_path = log_path if isinstance(log_path, str) else None
        if self.orphaned():  # it went away while we waited for the spec
            self.note_orphaned()
        self.log_format = spec.get("log_format", "text")
        logging.basicConfig(level=spec.get("log_level", "INFO"), format=LOG_FORMAT, force=True)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(self.formatter())
        resilience.configure(spec.get("error_handling"), module=self.name)  # @retry's defaults
        self.connect_bus(spec)
        if self.joining is not None:  # the kernel takes milliseconds to move us: prove it now
            code = self.prove_bus(spec)
            if code is not None:
                return code
            self.joining.join()
        if self.join_failed:  # its limits do not hold: it must not run
            return self.fail("load", self.join_failed, "", EXIT_LIMITS_FAILED)
        try:
            self.module = load_module(self.name, Path(spec["path"]), self.precompiled)
            self.precompiled = standby.PRECOMPILED = None  # used, or out of date: let it go
        except ModuleLoadError as exc:
            return self.fail("load", str(exc), exc.details, protocol.EXIT_LOAD_FAILED)
        assert self.bus is not None
        serving = Serving(
            self.name, self.channel, self.signals, self.orphaned, contained=self.cgroup is not None
        )
        manual = spec.get("ready") == "manual"
        if manual:  # before initialize(), which may already say it
            self.bus.on_ready = serving.ready_said
        code = self.initialize(spec)
        if code is not None:
            return code
        orphaned = serving.serve(self.bus, self.module, spec, manual)
        return self.stop(orphaned)

    def await_spec(self) -> protocol.Spec | None:
        """Say hello and wait for the spec; None if stopped, orphaned or unanswered first."""
        self.channel.hello(self.name)
        poller = zmq.Poller()
        poller.register(self.signals.read_fd, zmq.POLLIN)
        poller.register(self.channel.socket, zmq.POLLIN)
        # No module code has run yet: only a stop signal has a handler that can wake us.
        ready = dict(poller.poll(int(_SPEC_TIMEOUT * 1000)))
        if self.channel.socket in ready:
            spec = self.channel.receive(0)
            if spec is not None and spec.get("kind") == protocol.SPEC:
                return cast(protocol.Spec, spec)  # from our supervisor: see orchestrator/spec.py
        why = "stopped" if self.signals.read_fd in ready else "no spec from the supervisor"
        print(f"{self.name}: {why} before starting; exiting", file=sys.stderr)
        return None

    def connect_bus(self, spec: protocol.Spec) -> None:
        """Connect to the broker; the path is proven before the first event goes out, or once
        initialize() has returned (`initialize`), whichever comes first."""
        settings = (
            spec["xsub"],
            spec["xpub"],
            int(spec["high_water_mark"]),
            int(spec["max_message_size"]),
        )
        prepared = self.prepared
        self.bus = ZmqEventBus(
            self.context,
            self.name,
            settings[0],
            settings[1],
            high_water_mark=settings[2],
            max_message_size=settings[3],
            curve=spec.get("curve"),
            sockets=prepared.take_bus(settings, spec.get("curve")) if prepared else None,
            concurrency=int(spec.get("concurrency", 1)),
            groups_endpoint=spec.get("groups"),
            group=spec.get("group"),
            redeliver=bool(spec.get("redeliver", False)),
        )
        self.bus.prove_before_publishing(float(spec["handshake_timeout"]))

    def prove_bus(self, spec: protocol.Spec) -> int | None:
        """Prove the path with a probe now; an exit code if that fails."""
        assert self.bus is not None
        try:
            self.bus.prove(float(spec["handshake_timeout"]))
        except HandshakeTimeoutError as exc:
            return self.fail("bus", str(exc), "", protocol.EXIT_BUS_FAILED)
        return None

    def initialize(self, spec: protocol.Spec) -> int | None:
        """Call the module's initialize(), then, unless a probe proved the bus since its last
        subscription, probe (again) so that its subscriptions have reached the broker before we
        say ready; an exit code if either fails."""
        assert self.module is not None and self.bus is not None
        bus = self.bus
        timeout = float(spec["handshake_timeout"])
        try:
            try:
                self.module.initialize(bus, dict(spec["config"]))
            finally:  # if it forked and returned in the child, that child ends here
                forks.end_if_forked(self.channel.pid, "initialize()")
        except SystemExit as exc:
            return self.finished(exc)
        except HandshakeTimeoutError as exc:  # its first publish proved the bus: it failed
            return self.fail("bus", str(exc), "", protocol.EXIT_BUS_FAILED)
        except BaseException as exc:  # a KeyboardInterrupt, a GeneratorExit too: its failure
            said = f": {exc}" if str(exc) else ""
            message = f"initialize() raised {type(exc).__name__}{said}"
            return self.fail(
                "initialize", message, traceback.format_exc(), protocol.EXIT_INIT_FAILED
            )
        try:  # unless proven since its last subscription; a failed first publish's is raised
            bus.prove(timeout)
        except HandshakeTimeoutError as exc:
            code = self.fail("bus", str(exc), "", protocol.EXIT_BUS_FAILED)
            try:  # it was initialized: let it undo what it did
                self.module.shutdown()
            except BaseException:
                log.exception("shutdown() raised")
            return code
        bus.start()
        return None

    def finished(self, exc: SystemExit) -> int:
        """initialize() called sys.exit(): a module that exits when its work is done (a
        scheduled job). Shut it down as a stop does, so that what it published goes out."""
        code = _exit_code(exc)
        log.info("%s finished in initialize() (exit %d)", self.name, code)
        return self.stop(False, code)

    def stop(self, orphaned: bool, code: int = protocol.EXIT_OK) -> int:
        assert self.module is not None and self.bus is not None
        if orphaned:
            self.note_orphaned()
        if orphaned and not self.orphan.is_set():
            log.warning("the supervisor (pid %d) is gone; shutting down", self.parent_pid)
        if orphaned:
            self.grace.start()
        code = protocol.EXIT_ORPHANED if orphaned else code
        try:
            try:
                self.module.shutdown()
            finally:
                forks.end_if_forked(self.channel.pid, "shutdown()")
        except SystemExit as exc:  # sys.exit() in shutdown(): that exit, once cleaned up
            code = _exit_code(exc)
        except BaseException:  # a KeyboardInterrupt too: the bus still closes, the counters go
            log.exception("shutdown() raised")
            code = protocol.EXIT_SHUTDOWN_FAILED
        if not self.bus.close():
            log.warning("a callback was still running at exit")
        # The counters as they end: a module that exits at once (a job) has sent no heartbeat,
        # and status would show its events as none.
        self.channel.heartbeat({**self.bus.counters(), **resilience.counts()}, 0.0)
        self.channel.close()
        self.context.destroy(linger=200)
        if not run_atexit(_ATEXIT_TIMEOUT):  # before what it started is swept (see main)
            log.warning("the module's atexit handlers had not returned after %gs", _ATEXIT_TIMEOUT)
        return code


def _exit_code(exc: SystemExit) -> int:
    """The exit code `sys.exit(...)` asks for, as Python would make it (saying a text)."""
    if isinstance(exc.code, str):  # sys.exit("why"): Python would print it
        log.error("%s", exc.code)
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def main(*, joined: bool = False) -> int:
    """Run the module named by the environment the supervisor set; return the exit code.
    `joined`: this process joined the module's cgroups already (a standby taking over)."""
    name = os.environ.get(protocol.ENV_MODULE)
    endpoint = os.environ.get(protocol.ENV_CHANNEL)
    if not name or not endpoint:
        print(
            "module_sdk: this command is started by the orchestrator supervisor, not by hand "
            f"({protocol.ENV_MODULE} and {protocol.ENV_CHANNEL} are not set)",
            file=sys.stderr,
        )
        return 2
    lifeline = os.environ.get(protocol.ENV_LIFELINE)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Before any module code runs: whatever it starts stays below this process, even once its
    # own parent has died (a double fork) or it has left the session. See module_sdk/process.py.
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    child = _Child(name, endpoint, int(lifeline) if lifeline else None, joined=joined)
    try:
        code = child.run()
        if not child.context.closed:  # an early exit: let the error report reach the supervisor
            child.context.destroy(linger=500)
    finally:
        # However the module ends, what it started ends with it (a SIGKILL runs no code here:
        # then the orphans go to the supervisor, a subreaper too, which kills them).
        if child.orphaned():
            child.grace.kill_everything()
        else:  # stopped: what it left gets SIGTERM first (the supervisor signalled it alone)
            stop_descendants(_LEFTOVER_GRACE)
        killed = kill_descendants()
        if killed:
            log.warning("killed %d process(es) the module left running", len(killed))
    return code
