"""The supervisor: one loop that waits in one poller for signals, control requests, child messages
and child output. The module processes themselves are the `ChildManager`'s.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import zmq

from broker import ENV_CURVE
from module_sdk.process import SignalPipe
from orchestrator import control
from orchestrator.boot import Boot
from orchestrator.bridge_process import BridgeProcess, reconcile_bridge
from orchestrator.broker_process import BrokerProcess, BrokerStartError, bind_error
from orchestrator.bus_keys import BusKeys
from orchestrator.cgroups import ModuleCgroups
from orchestrator.child_channel import ChildChannel
from orchestrator.commands import CommandHandler
from orchestrator.config import AppConfig, Redactor
from orchestrator.control_port import Replies
from orchestrator.events import SystemEvents
from orchestrator.fd_budget import ControlGuard, files_short, open_files_limit
from orchestrator.forwarder import Forwarder
from orchestrator.health import Health
from orchestrator.helper_process import HelperProcess
from orchestrator.hot_reload import HotReload
from orchestrator.listeners import channel_socket, control_socket, rebind
from orchestrator.manager import ChildManager
from orchestrator.metrics import MetricsEndpoint
from orchestrator.metrics.module_metrics import CHANNEL_LIMITS, MAX_CHANNEL_MESSAGE
from orchestrator.notify import WebhookNotifier, close_all
from orchestrator.project_lock import ProjectLock
from orchestrator.resources import keep_large_allocations_apart, machine_limits
from orchestrator.rundir import RunDir
from orchestrator.scheduler import Scheduler
from orchestrator.supervisor_reload import ConfigReload
from orchestrator.supervisor_view import supervisor_port
from orchestrator.systemd import state_of

log = logging.getLogger(__name__)
UNREACHABLE = "run directory %s removed (a tmp cleaner?): no command can reach us; stopping"

_BROKER_START_TIMEOUT = 10.0
_WEBHOOK_LOG_LINES = 20
_LAST_REPLIES_LINGER = 500  # ms the control socket has, once closed, to send what it holds


class StartError(RuntimeError):
    """The supervisor cannot start for a reason the user can fix (a bus port in use, say)."""


class Supervisor(ConfigReload):
    """Runs the broker and every enabled module of `config` until asked to stop."""

    def __init__(
        self,
        config: AppConfig,
        run_dir: RunDir,
        redactor: Redactor,
        boot: Boot,
        *,
        foreground: bool,
        project_lock: ProjectLock | None = None,
    ) -> None:
        self.config = config
        self.boot = boot
        self.redactor = redactor
        self.run_dir = run_dir
        self.project_lock = project_lock  # kept in the loop; closed by whoever took it
        self.started_wall = time.time()
        self.bus_keys: BusKeys | None = None
        if config.bus.transport == "tcp":
            self.bus_keys = BusKeys.generate()
            redactor.add(self.bus_keys.secrets())
            self.xsub = f"tcp://{config.bus.host}:{config.bus.xsub_port}"
            self.xpub = f"tcp://{config.bus.host}:{config.bus.xpub_port}"
            port = config.bus.groups_port
            self.groups = None if port is None else f"tcp://{config.bus.host}:{port}"
        else:
            self.xsub, self.xpub, self.groups = run_dir.xsub, run_dir.xpub, run_dir.groups
        keep_large_allocations_apart()  # before ZeroMQ's I/O thread allocates its first
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.events: SystemEvents | None = None
        self.control = control_socket(self.context, run_dir)
        self.control_guard = ControlGuard(self.control, run_dir.control, open_files_limit(), rebind)
        self.channel = channel_socket(self.context, run_dir)
        self.replies = Replies(self.control)
        self.send_reply, self.wait_for = self.replies.send, self.replies.wait_for
        self.signals = SignalPipe((signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        # In the foreground on a terminal, SIGHUP is the terminal closing: stop, as programs do
        # (elsewhere, as from systemd's ExecReload, it asks for a reload).
        self._on_terminal = foreground and os.isatty(2)
        self.poller = zmq.Poller()
        for registered in (self.signals.read_fd, self.control, self.channel):
            self.poller.register(registered, zmq.POLLIN)
        self.manager = ChildManager(
            config,
            machine_limits(config.resources),
            redactor=redactor,
            cgroups=ModuleCgroups(run_dir.key),
            channel_endpoint=run_dir.child_channel,
            lifeline=boot.lifeline,
            forkserver=boot.forkserver,
            poller=self.poller,
            publish=self.publish,
            foreground=foreground,
        )
        self.broker = BrokerProcess(
            xsub=self.xsub,
            xpub=self.xpub,
            groups=self.groups,
            inject=run_dir.inject,
            max_message_size=config.bus.max_message_bytes,
            high_water_mark=config.bus.high_water_mark,
            memory_limit_mb=config.bus.broker_memory_limit_mb,
            lifeline=boot.lifeline,
            poller=self.poller,
            watch_exit=self.manager.watch_exit,
            env={ENV_CURVE: self.bus_keys.broker()} if self.bus_keys is not None else None,
        )
        self.manager.bus_up_since = self.broker.up_since  # a start waits while it is down
        self.broker.on_ready = self.manager.start_waiting
        if self.bus_keys is None:  # an ipc bus: standbys connect to it ahead
            self.manager.standbys.bus = {
                "xsub": self.xsub,
                "xpub": self.xpub,
                "high_water_mark": config.bus.high_water_mark,
                "max_message_size": config.bus.max_message_bytes,
            }
        self.bridge: BridgeProcess | None = None
        self.forwarder = Forwarder(self.send_reply, self._bridge_pid)
        self.bus = config.bus  # the bus in force: a reload's `bus:` changes wait for `up`
        self.health = Health(self.manager)
        self.notifier = self._notifier(config)
        self.hot_reload = HotReload(
            self.poller, self.manager, lambda: self.reload(dry_run=False)[0]
        )
        self.commands = CommandHandler(supervisor_port(self), lambda: self.scheduler)
        self.metrics = MetricsEndpoint(
            config,
            status=lambda: self.commands.status_data(sample=False),
            loop_lag=lambda: self.health.last_turn,
            cluster=lambda: self.forwarder.forward(None, None, 5.0),
        )
        self._retired: list[WebhookNotifier] = []  # replaced by a reload, still delivering
        # (error, since): the reloads rejected since a config was last applied, for `status`.
        self.rejected_config: tuple[str, float] | None = None
        self.child_inbox = control.Inbox(
            self.channel,
            "child message",
            None,
            limits=CHANNEL_LIMITS,
            turn_bytes=MAX_CHANNEL_MESSAGE * 2,
        )
        self.child_channel = ChildChannel(
            self.channel,
            self.manager,
            bus=self.bus,
            xsub=self.xsub,
            xpub=self.xpub,
            groups=self.groups,
            curve=self.bus_keys.client() if self.bus_keys is not None else None,
            log_level=lambda: self.config.logging.level,
            on_heartbeat=lambda child, message: self.metrics.heartbeat(child.name, message),
        )
        self.control_inbox = control.Inbox(
            self.control,
            "control request",
            self.send_reply,
            limits=control.REQUEST_LIMITS,
            turn_seconds=control.TURN_SECONDS,
        )
        self.scheduler = Scheduler(self.manager, self.child_channel.send_run)
        self.child_channel.runs = self.scheduler

    def publish(self, event_type: str, **data: Any) -> None:
        """Publish a built-in event (source `orchestrator`) once the bus is up, and hand it to the
        webhooks that want it (they send it off the loop)."""
        self.metrics.record(event_type, data)
        if self.events is not None:
            self.events.publish(event_type, **data)
        if self.notifier.wants(event_type):
            child = self.manager.children.get(str(data.get("name")))
            tail = child.log.tail(_WEBHOOK_LOG_LINES) if child is not None else []
            self.notifier.notify(event_type, data, tail)

    def _notifier(
        self, config: AppConfig, previous: WebhookNotifier | None = None
    ) -> WebhookNotifier:
        return WebhookNotifier(
            config.notifications,
            config.error_handling,
            self.redactor,
            config.app.name,
            previous=previous,
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, serve until stopped, stop everything; returns the exit code. Raises
        StartError if the bus cannot start (after closing what was opened)."""
        try:
            self._start()
            while not (self.manager.shutting_down and not self.manager.any_process()):
                self._turn()
        finally:
            self._close()
        return 0

    def _start(self) -> None:
        log.info(
            "supervisor %d starting (%s %s): %d modules",
            os.getpid(),
            self.config.app.name,
            self.config.app.version,
            len(self.manager.children),
        )
        modules = len(self.manager.children)
        if short := files_short(self.manager.limits.as_dict(modules), modules):
            log.warning("%s", short)
        # The broker started early is ours first (the template's answer read, before anything
        # may close the template), so that whatever stops the start stops it too.
        self.broker.start(self.boot.take_broker(self.broker.argv))
        if (error := self.metrics.start()) is not None:  # before any module starts
            raise StartError(error)
        if not self.boot.subreaper:
            log.debug("not a subreaper here: strays of modules are found only in their groups")
        if not any(m.supervision.start_method == "fork" for m in self.config.enabled_modules):
            self.boot.forkserver.close()  # not needed now; a reload that adds one restarts it
        self.events = SystemEvents(
            self.context,
            self.run_dir.inject,
            max_message_size=self.bus.max_message_bytes,
        )
        # The modules start while the broker binds: their handshakes wait for it.
        with self.manager.starting_together():
            for child in self.manager.children.values():
                self.manager.start(child)
        try:
            self.broker.wait_ready(_BROKER_START_TIMEOUT)
        except BrokerStartError as exc:
            message = bind_error(self.config, self.xsub, self.xpub, str(exc))
            log.error("the supervisor cannot start: %s", message)
            self.manager.shutting_down = True
            raise StartError(message) from None
        self._set_bridge()
        limits = self.manager.limits
        log.info(
            "supervisor %d up (%s %s): bus %s -> %s (broker pid %s); limits: %d module processes, "
            "%d threads (%d MB available of %d MB, %d CPUs), %d open files; containment: %s",
            os.getpid(),
            self.config.app.name,
            self.config.app.version,
            self.xsub,
            self.xpub,
            self.broker.pid,
            limits.process_limit(len(self.manager.children))[0],
            limits.max_threads,
            limits.available_mb,
            limits.total_mb,
            limits.cpu_count,
            self.boot.fd_limit,
            "cgroup v2" if self.manager.cgroups.available() else "process groups + subreaper",
        )
        self.hot_reload.configure(self.config)

    def _bridge_pid(self) -> int | None:
        return self.bridge.pid if self.bridge is not None else None

    @property
    def helpers(self) -> list[HelperProcess]:
        """The supervisor's own processes: the broker, and the bridge in cluster mode."""
        return [self.broker] if self.bridge is None else [self.broker, self.bridge]

    def _set_bridge(self) -> None:
        """Start, restart (its settings changed) or stop the bridge to match `cluster:`."""
        self.bridge = reconcile_bridge(
            self.bridge,
            self.config,
            bus=self.bus,
            xsub=self.xsub,
            xpub=self.xpub,
            curve=self.bus_keys.client() if self.bus_keys is not None else None,
            redactor=self.redactor,
            lifeline=self.boot.lifeline,
            poller=self.poller,
            watch_exit=self.manager.watch_exit,
            control=self.run_dir.control,
            link_key=self.forwarder.key,
            publish=self.publish,
            local_prefix=self.events.prefix if self.events is not None else "",
        )

    def _turn(self) -> None:
        deadline = self.health.next_deadline()
        for helper in self.helpers:
            helper_deadline = helper.next_deadline()
            if helper_deadline is not None:
                deadline = min(deadline, helper_deadline)
        deadline = min(deadline, self.hot_reload.next_deadline() or deadline)
        deadline = min(deadline, self.boot.systemd.next_deadline() or deadline)
        deadline = min(deadline, self.metrics.next_deadline() or deadline)
        deadline = min(deadline, self.scheduler.next_deadline() or deadline)
        deadline = min(deadline, self.manager.processes.next_deadline() or deadline)
        deadline = min(deadline, self.control_guard.next_deadline() or deadline)
        timeout = max(0, min(int((deadline - time.monotonic()) * 1000) + 1, 60_000))
        polled = time.monotonic()
        ready = dict(self.poller.poll(timeout))
        # Only the wait it asked for is the modules' time; a stall beyond it is excused in tick().
        self.health.waited(min(time.monotonic() - polled, timeout / 1000))
        if self.signals.read_fd in ready:
            self._handle_signals(self.signals.pending())
        self.hot_reload.handle(ready)
        # Child messages before reaping: a child reports its error, then exits.
        self.child_inbox.drain(self.child_channel.handle)
        for helper in self.helpers:
            if helper.fd is not None and helper.fd in ready:
                helper.read()
        self.manager.read_output(ready)
        self.manager.reap()
        if self.control in ready:
            self.control_inbox.drain(self.commands.handle)
        if self.control in ready or self.control_guard.watching:
            self.control_guard.check(time.monotonic())
        now = time.monotonic()
        if not self.run_dir.intact(now) and not self.manager.shutting_down:
            log.error(UNREACHABLE, self.run_dir.path)
            self.manager.begin_shutdown()
        if self.project_lock is not None:
            self.project_lock.keep(now)
        self.health.tick(now)
        for helper in self.helpers:
            helper.tick(now)
        if self.events is not None:
            self.events.sync(now)
        self.boot.systemd.tick(now, self.manager.shutting_down, lambda: state_of(self.manager))
        self.metrics.tick(now)
        self.scheduler.tick()
        self.replies.serve()
        self.manager.standbys_held = not self.replies.quiet(time.monotonic())
        self.manager.keep_standbys_later()
        for inbox in (self.child_inbox, self.control_inbox):
            inbox.malformed.flush()

    def _handle_signals(self, received: list[int]) -> None:
        for signum in received:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self.manager.shutting_down:
                    log.info("received %s: stopping all modules", signal.Signals(signum).name)
                self.manager.begin_shutdown()
            elif signum == signal.SIGHUP and self._on_terminal:  # the terminal closed
                if not self.manager.shutting_down:
                    log.info("received SIGHUP (the terminal hung up): stopping all modules")
                self.manager.begin_shutdown()
            elif signum == signal.SIGHUP and self.manager.shutting_down:
                log.info("received SIGHUP while stopping: no reload")
            elif signum == signal.SIGHUP:
                log.info("received SIGHUP: reloading the config")
                self.reload(dry_run=False)

    # -- teardown ---------------------------------------------------------------------------------

    def _close(self) -> None:
        self.metrics.close()
        self.hot_reload.close()
        if self.events is not None:
            self.events.close()  # its I/O thread goes on handing the last events over for up to 0.5 s;
            # a subscriber may still miss those the broker had not forwarded when it stops
            self.events = None
        if self.bridge is not None:
            self.bridge.stop(timeout=1.0)
        self.broker.stop()
        self.manager.close()
        close_all([*self._retired, self.notifier])  # every module has stopped: now we may wait
        for inbox in (self.child_inbox, self.control_inbox):
            inbox.malformed.flush(force=True)
        self.replies.close()
        log.info("supervisor %d stopped", os.getpid())
        # The last replies (`down`'s among them) may still be queued: a socket closed with no
        # linger drops them, and under load `down` then said the supervisor went away unasked.
        self.control.close(linger=_LAST_REPLIES_LINGER)
        self.channel.close()
        self.context.destroy(linger=0)
        self.signals.close()
        self.boot.close()
        self.run_dir.release()
