"""The supervisor: one loop that waits in one poller for signals, control requests, child messages
and child output, and owns every module process from spawn to reap.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from broker import Broker
from module_sdk import protocol
from module_sdk.process import SignalPipe
from orchestrator import control
from orchestrator.child import LastExit, ManagedChild
from orchestrator.commands import CommandHandler
from orchestrator.config import AppConfig, Redactor
from orchestrator.events import SystemEvents
from orchestrator.output import ModuleLog, OutputReader
from orchestrator.processes import reap, signal_group, spawn_module
from orchestrator.resources import Limits, ProcessSampler, machine_limits, system_usage
from orchestrator.rundir import RunDir
from orchestrator.states import (
    Action,
    ChildState,
    ExitReason,
    ExitStatus,
    decide_after_exit,
)

log = logging.getLogger(__name__)

_HANDSHAKE_TIMEOUT = 10.0
_SHIM_EXIT_REASONS = {
    protocol.EXIT_LOAD_FAILED: ExitReason.LOAD_FAILED,
    protocol.EXIT_INIT_FAILED: ExitReason.INIT_FAILED,
}
# A waiter is called after every loop turn; it returns the reply once it has one.
Waiter = Callable[[], dict[str, Any] | None]


class Supervisor:
    """Runs the broker and every enabled module of `config` until asked to stop."""

    def __init__(self, config: AppConfig, run_dir: RunDir, *, foreground: bool) -> None:
        self.config = config
        self.run_dir = run_dir
        self.redactor = Redactor(config.secrets)
        self.limits: Limits = machine_limits(config.resources)
        self.children = {
            spec.name: ManagedChild(
                spec, ModuleLog(spec.name, config.logging, self.redactor, echo=foreground)
            )
            for spec in config.enabled_modules
        }
        self.by_pid: dict[int, ManagedChild] = {}
        self.sampler = ProcessSampler()
        self.started_wall = time.time()
        self.shutting_down = False
        self.shutdown_deadline: float | None = None
        self._waiters: list[tuple[bytes, Waiter]] = []
        self._readers: dict[int, OutputReader] = {}
        self._announced = False
        self._next_usage = time.monotonic() + config.resources.usage_log_interval
        if config.bus.transport == "tcp":
            self.xsub = f"tcp://{config.bus.host}:{config.bus.xsub_port}"
            self.xpub = f"tcp://{config.bus.host}:{config.bus.xpub_port}"
        else:
            self.xsub, self.xpub = run_dir.xsub, run_dir.xpub
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.broker = Broker(
            self.context,
            self.xsub,
            self.xpub,
            max_message_size=int(config.bus.max_message_size_mb * 1024 * 1024),
            high_water_mark=config.bus.high_water_mark,
        )
        self.control = self._bind(zmq.ROUTER, run_dir.control)
        self.channel = self._bind(zmq.ROUTER, run_dir.child_channel)
        self.events: SystemEvents | None = None
        self.signals = SignalPipe((signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        self.commands = CommandHandler(self)
        self.poller = zmq.Poller()
        for registered in (self.signals.read_fd, self.control, self.channel):
            self.poller.register(registered, zmq.POLLIN)

    def _bind(self, kind: int, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(endpoint)
        os.chmod(endpoint.removeprefix("ipc://"), 0o600)
        return sock

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until stopped, stop everything; returns the exit code."""
        self.broker.start()
        self.events = SystemEvents(self.context, self.xsub)
        log.info(
            "supervisor %d up: bus %s -> %s; limits: %d module processes, %d threads "
            "(%d MB available of %d MB, %d CPUs)",
            os.getpid(),
            self.xsub,
            self.xpub,
            self.limits.max_processes,
            self.limits.max_threads,
            self.limits.available_mb,
            self.limits.total_mb,
            self.limits.cpu_count,
        )
        for child in self.children.values():
            self.start(child)
        try:
            while not (self.shutting_down and not any(c.pid for c in self.children.values())):
                self._turn()
        finally:
            self._close()
        return 0

    def _turn(self) -> None:
        ready = dict(self.poller.poll(self._poll_timeout_ms()))
        if self.signals.read_fd in ready:
            self._handle_signals(self.signals.pending())
        # Child messages before reaping: a child reports its error, then exits.
        self._drain(self.channel, self._child_message)
        for fd in [fd for fd in ready if isinstance(fd, int) and fd in self._readers]:
            if not self._readers[fd].read():
                self.poller.unregister(fd)
                del self._readers[fd]
        self._reap()
        if self.control in ready:
            self._drain(self.control, self.commands.handle)
        self._tick(time.monotonic())
        self._serve_waiters()

    def _drain(
        self, sock: zmq.Socket[bytes], handle: Callable[[bytes, dict[str, Any]], None]
    ) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            try:
                message = control.decode(frames[1])
            except ValueError as exc:
                log.warning("ignored a malformed message on %s: %s", sock.LAST_ENDPOINT, exc)
                continue
            handle(frames[0], message)

    def _poll_timeout_ms(self) -> int:
        now = time.monotonic()
        deadlines = [self._next_usage]
        for child in self.children.values():
            if child.deadline is not None:
                deadlines.append(child.deadline)
            if child.state is ChildState.RUNNING:
                deadlines.append(child.last_heartbeat + child.spec.supervision.heartbeat_timeout)
        if self.shutdown_deadline is not None:
            deadlines.append(self.shutdown_deadline)
        wait = min(deadlines) - now
        return max(0, min(int(wait * 1000) + 1, 60_000))

    def _handle_signals(self, received: list[int]) -> None:
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self.shutting_down:
                    log.info("received %s: stopping all modules", signal.Signals(signum).name)
                self.begin_shutdown()
            elif signum == signal.SIGHUP:
                log.warning("received SIGHUP: config reload is not available yet; ignored")

    def _serve_waiters(self) -> None:
        still: list[tuple[bytes, Waiter]] = []
        for identity, waiter in self._waiters:
            answer = waiter()
            if answer is None:
                still.append((identity, waiter))
            else:
                self.send_reply(identity, answer)
        self._waiters = still

    def wait_for(self, identity: bytes, waiter: Waiter) -> None:
        """Reply to `identity` once `waiter` returns an answer (checked after every loop turn)."""
        self._waiters.append((identity, waiter))

    def send_reply(self, identity: bytes, answer: dict[str, Any]) -> None:
        try:
            self.control.send_multipart([identity, control.encode(answer)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not answer a control request: %s", exc)

    # -- starting and stopping -------------------------------------------------------------------

    def live_processes(self) -> int:
        return sum(1 for c in self.children.values() if c.pid is not None)

    def start(self, child: ManagedChild) -> bool:
        """Spawn the module now if the process limit allows (True), else leave it waiting."""
        if self.shutting_down:
            return False
        if self.live_processes() >= self.limits.max_processes:
            child.state, child.deadline = ChildState.WAITING, None
            child.why = f"process limit reached ({self.limits.max_processes} module processes)"
            log.warning("%s waits: %s", child.name, child.why)
            return False
        child.stop_requested = child.restart_after_stop = False
        child.kill_reason, child.reported_error, child.why = None, "", ""
        child.counters = {}
        try:
            child.popen = spawn_module(
                child.name,
                self.run_dir.child_channel,
                self.config.config_dir.parent,
                child.spec.env,
            )
        except OSError as exc:
            log.error("%s: cannot start a process: %s", child.name, exc)
            self._after_exit(child, ExitStatus(code=127), ExitReason.CRASHED, str(exc))
            return False
        child.spawns += 1
        child.state = ChildState.STARTING
        child.started_at, child.started_wall = time.monotonic(), time.time()
        child.ready_at = None
        child.deadline = child.started_at + child.spec.supervision.start_timeout
        self.by_pid[child.popen.pid] = child
        assert child.popen.stdout is not None
        reader = OutputReader(child.popen.stdout, child.log)  # type: ignore[arg-type]
        child.popen.stdout = None  # the reader owns the pipe now
        self._readers[reader.fd] = reader
        self.poller.register(reader.fd, zmq.POLLIN)
        log.info("%s starting (pid %d)", child.name, child.popen.pid)
        return True

    def stop(
        self, child: ManagedChild, *, then_restart: bool = False, timeout: float | None = None
    ) -> None:
        """Ask the module to stop (SIGTERM to its group); SIGKILL follows at the deadline."""
        child.restart_after_stop = then_restart
        if child.pid is None:
            child.state, child.deadline = ChildState.STOPPED, None
            if then_restart:
                self.start(child)
            return
        if child.state is ChildState.STOPPING:
            return
        child.stop_requested = True
        child.state = ChildState.STOPPING
        grace = child.spec.supervision.stop_timeout if timeout is None else timeout
        child.deadline = time.monotonic() + grace
        log.info("%s stopping (pid %d, SIGTERM, up to %gs)", child.name, child.pid, grace)
        signal_group(child.pid, signal.SIGTERM)

    def kill(self, child: ManagedChild, reason: ExitReason) -> None:
        """SIGKILL the module's process group now, recording why."""
        if child.pid is None:
            return
        child.kill_reason = child.kill_reason or reason
        log.error("%s (pid %d): %s; killing its process group", child.name, child.pid, reason.value)
        signal_group(child.pid, signal.SIGKILL)
        child.deadline = None

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Stop every module, in reverse start order; the loop ends when none is left."""
        if not self.shutting_down:
            self.shutting_down = True
            if self.events is not None:
                self.events.publish("app.shutdown", name=self.config.app.name)
        if timeout is not None:
            self.shutdown_deadline = time.monotonic() + timeout
        for child in reversed(list(self.children.values())):
            if child.pid is None:
                child.state, child.deadline = ChildState.STOPPED, None
            else:
                remaining = (
                    None if timeout is None else min(timeout, child.spec.supervision.stop_timeout)
                )
                self.stop(child, timeout=remaining)

    # -- events from children ---------------------------------------------------------------------

    def _child_message(self, identity: bytes, message: dict[str, Any]) -> None:
        pid = message.get("pid")
        kind = message.get("kind")
        child = self.by_pid.get(pid) if isinstance(pid, int) else None
        if child is None:
            if kind == protocol.ERROR:
                self._late_error(pid, message)
            return
        if kind == protocol.HELLO:
            self._send_spec(identity, child)
        elif kind == protocol.READY:
            self._on_ready(child)
        elif kind == protocol.HEARTBEAT:
            child.last_heartbeat = time.monotonic()
            counters = message.get("counters")
            if isinstance(counters, dict):
                child.counters = counters
            busy = message.get("busy_for")
            child.busy_for = float(busy) if isinstance(busy, int | float) else 0.0
        elif kind == protocol.ERROR:
            child.reported_error = self.redactor.scrub(str(message.get("error", "")))

    def _late_error(self, pid: object, message: dict[str, Any]) -> None:
        """An error report that arrived after its process was reaped still belongs in `status`."""
        for child in self.children.values():
            if (
                child.last_exit is not None
                and child.last_exit.pid == pid
                and not child.last_exit.error
            ):
                child.last_exit.error = self.redactor.scrub(str(message.get("error", "")))

    def _send_spec(self, identity: bytes, child: ManagedChild) -> None:
        spec = child.spec
        payload = {
            "kind": protocol.SPEC,
            "path": str(spec.path),
            "config": dict(spec.config),
            "xsub": self.xsub,
            "xpub": self.xpub,
            "heartbeat_interval": spec.supervision.heartbeat_interval,
            "handshake_timeout": min(_HANDSHAKE_TIMEOUT, spec.supervision.start_timeout),
            "high_water_mark": self.config.bus.high_water_mark,
            "max_message_size": int(self.config.bus.max_message_size_mb * 1024 * 1024),
            "log_level": self.config.logging.level,
        }
        self.channel.send_multipart([identity, msgpack.packb(payload)], zmq.NOBLOCK)

    def _on_ready(self, child: ManagedChild) -> None:
        if child.state is not ChildState.STARTING:
            return
        now = time.monotonic()
        child.state, child.ready_at, child.deadline = ChildState.RUNNING, now, None
        child.last_heartbeat = now
        log.info(
            "%s running (pid %d, ready in %.0f ms)",
            child.name,
            child.pid,
            (now - child.started_at) * 1000,
        )
        if self.events is not None:
            self.events.publish("module.loaded", name=child.name, pid=child.pid)

    def _reap(self) -> None:
        for pid, raw in reap():
            child = self.by_pid.pop(pid, None)
            if child is None or child.popen is None:
                log.debug("reaped unknown process %d", pid)
                continue
            status = ExitStatus.from_wait_status(raw)
            child.popen.returncode = (
                status.code if status.code is not None else -(status.signal or 0)
            )
            signal_group(pid, signal.SIGKILL)  # anything the module left behind in its group
            self.sampler.forget(pid)
            self._after_exit(child, status, self._exit_reason(child, status), child.reported_error)

    @staticmethod
    def _exit_reason(child: ManagedChild, status: ExitStatus) -> ExitReason:
        if child.kill_reason is not None:
            return child.kill_reason
        if child.stop_requested:
            return ExitReason.STOPPED
        if status.code in _SHIM_EXIT_REASONS:
            return _SHIM_EXIT_REASONS[status.code]
        return ExitReason.EXITED if status.code == 0 else ExitReason.CRASHED

    def _after_exit(
        self, child: ManagedChild, status: ExitStatus, reason: ExitReason, error: str
    ) -> None:
        now = time.monotonic()
        ran_stably = (
            child.ready_at is not None
            and now - child.ready_at >= child.spec.supervision.stable_after
        )
        if child.state is ChildState.STARTING:
            child.failed_spawn = child.spawns
        child.last_exit = LastExit(status, reason, time.time(), error, child.pid)
        child.popen = None
        child.ready_at = None
        level = logging.INFO if not reason.is_failure else logging.ERROR
        detail = f": {error}" if error else ""
        log.log(level, "%s exited (%s, %s)%s", child.name, status.describe(), reason.value, detail)
        if self.events is not None:
            if reason.is_failure:
                self.events.publish(
                    "module.error",
                    name=child.name,
                    error=error or reason.value,
                    reason=reason.value,
                    exit_code=status.code,
                    signal=status.signal,
                )
            self.events.publish("module.unloaded", name=child.name)
        if child.restart_after_stop and not self.shutting_down:
            child.restarts += 1
            child.consecutive_failures = 0
            self.start(child)
            self._start_waiting()
            return
        if reason.is_failure:
            child.consecutive_failures = 1 if ran_stably else child.consecutive_failures + 1
        else:
            child.consecutive_failures = 0
        decision = decide_after_exit(
            child.spec.supervision,
            reason,
            stop_requested=child.stop_requested or self.shutting_down,
            consecutive_failures=child.consecutive_failures,
            recent_restarts=tuple(child.restart_times),
            now=now,
        )
        child.state, child.why = decision.state, decision.why
        child.deadline = now + decision.delay if decision.action is Action.RESTART else None
        if decision.action is Action.RESTART:
            child.restart_times.append(now)
            log.info("%s restarts in %.2fs", child.name, decision.delay)
        elif decision.action is Action.FAIL:
            log.error(
                "%s failed: %s; it stays down until `orchestrator restart %s`",
                child.name,
                decision.why,
                child.name,
            )
            if self.events is not None:
                self.events.publish("module.failed", name=child.name, reason=decision.why)
        self._start_waiting()

    def _start_waiting(self) -> None:
        for child in self.children.values():
            if (
                child.state is ChildState.WAITING
                and self.live_processes() < self.limits.max_processes
            ):
                self.start(child)

    # -- timers -----------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        for child in self.children.values():
            settings = child.spec.supervision
            if (
                child.state is ChildState.BACKOFF
                and child.deadline is not None
                and now >= child.deadline
            ):
                child.restarts += 1
                if self.start(child) and self.events is not None:
                    self.events.publish(
                        "module.restarted", name=child.name, pid=child.pid, restarts=child.restarts
                    )
            elif (
                child.state is ChildState.STARTING
                and child.deadline is not None
                and now >= child.deadline
            ):
                self.kill(child, ExitReason.START_TIMEOUT)
            elif (
                child.state is ChildState.STOPPING
                and child.deadline is not None
                and now >= child.deadline
            ):
                log.error("%s did not stop within its stop timeout", child.name)
                self.kill(child, ExitReason.STOPPED)
            elif child.state is ChildState.RUNNING and (
                now - child.last_heartbeat > settings.heartbeat_timeout
                or child.busy_for > settings.heartbeat_timeout
            ):
                self.kill(child, ExitReason.HUNG)
        if self.shutdown_deadline is not None and now >= self.shutdown_deadline:
            for child in self.children.values():
                if child.pid is not None and child.kill_reason is None:
                    self.kill(child, ExitReason.STOPPED)
        if not self._announced and self.settled() and self.events is not None:
            self._announced = True
            running = [c.name for c in self.children.values() if c.state is ChildState.RUNNING]
            self.events.publish(
                "app.started", name=self.config.app.name, pid=os.getpid(), modules=running
            )
        if now >= self._next_usage:
            self._next_usage = now + self.config.resources.usage_log_interval
            self._log_usage()

    def settled(self) -> bool:
        """Every module is running, or has failed or been held back at least once since `up`."""
        return all(
            c.state
            in (ChildState.RUNNING, ChildState.FAILED, ChildState.WAITING, ChildState.STOPPED)
            or c.failed_spawn > 0
            for c in self.children.values()
        )

    def _log_usage(self) -> None:
        usage = system_usage()
        modules = {
            c.name: self.sampler.sample(c.pid) for c in self.children.values() if c.pid is not None
        }
        log.info(
            "usage: cpu %.1f%%, memory %.1f%%, %d MB available; %s",
            usage["cpu_percent"],
            usage["memory_percent"],
            usage["available_mb"],
            ", ".join(f"{name} {m.get('rss_mb', '?')} MB" for name, m in modules.items())
            or "no modules",
        )
        if self.events is not None:
            self.events.publish("resources.usage", system=usage, modules=modules)

    # -- teardown ---------------------------------------------------------------------------------

    def _close(self) -> None:
        for (
            child
        ) in self.children.values():  # only after an error in the loop: normally none is left
            if child.pid is not None:
                signal_group(child.pid, signal.SIGKILL)
        for identity, _ in self._waiters:
            self.send_reply(identity, control.failure("the supervisor stopped"))
        for reader in self._readers.values():
            reader.close()
        log.info("supervisor %d stopped", os.getpid())
        if self.events is not None:
            self.events.close()
        self.broker.stop()
        self.broker.join(2.0)
        self.control.close()
        self.channel.close()
        self.context.destroy(linger=0)
        self.signals.close()
        for child in self.children.values():
            child.log.close()
        self.run_dir.release()
