"""The module process once its module is initialized, until it is asked to stop: it says ready
(at once, or when the module calls `event_bus.ready()` with `ready: manual`), heartbeats with
its counters, runs the module's `health()` checks and calls its `run()` when the supervisor
asks. `module_sdk.shim` runs it between `initialize()` and `shutdown()`."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from types import ModuleType

import zmq

from module_sdk import forks, metrics, protocol, resilience
from module_sdk.bus import ZmqEventBus
from module_sdk.channel import SupervisorChannel
from module_sdk.health import HealthProbe
from module_sdk.runner import Runner
from module_sdk.stopsignals import StopSignals

log = logging.getLogger("module_sdk.shim")


class Serving:
    """The serve loop of one module process, and the wake-up `event_bus.ready()` pulls."""

    def __init__(
        self,
        name: str,
        channel: SupervisorChannel,
        signals: StopSignals,
        orphaned: Callable[[], bool],
        *,
        contained: bool,
    ) -> None:
        self.name = name
        self.channel = channel
        self.signals = signals
        self.orphaned = orphaned
        self.contained = contained  # it joined its cgroup (it was given one)
        self.runner: Runner | None = None  # the module's run(), if it has one
        self.ready_pipe = os.pipe()  # event_bus.ready() wakes the loop (`ready: manual`)
        self.wakeup_fd_taken = (
            False  # the module took the signal wake-up fd (see `_check_wakeup_fd`)
        )
        for fd in self.ready_pipe:
            os.set_blocking(fd, False)

    def ready_said(self) -> None:
        """`event_bus.ready()` was called (on any thread): wake the loop to report it."""
        with contextlib.suppress(OSError):  # the pipe is full: it is awake already
            os.write(self.ready_pipe[1], b"r")

    def serve(
        self, bus: ZmqEventBus, module: ModuleType, spec: protocol.Spec, manual: bool
    ) -> bool:
        """Report ready, then heartbeat, run the health checks and the run() requests until
        asked to stop; True if we stop because the supervisor is gone."""
        run = getattr(module, "run", None)
        self.runner = Runner(run, self.channel.pid) if callable(run) else None
        poller = zmq.Poller()
        poller.register(self.signals.read_fd, zmq.POLLIN)
        poller.register(self.channel.socket, zmq.POLLIN)
        if manual:
            poller.register(self.ready_pipe[0], zmq.POLLIN)
        else:
            self._report_ready()
        probe = _health_probe(module, spec)
        if probe is not None and not manual:
            probe.start(time.monotonic())
        heartbeat_interval = float(spec["heartbeat_interval"])
        next_beat = time.monotonic()
        if self.runner is not None:
            poller.register(self.runner.fd, zmq.POLLIN)
        while True:
            due = next_beat if probe is None or manual else min(next_beat, probe.next_due)
            ready = dict(poller.poll(max(1, int((due - time.monotonic()) * 1000) + 1)))
            # Module code runs on this thread in its signal handlers: one may have forked.
            if forks.pid != self.channel.pid:
                forks.end_forked_child(self.channel.pid, "a signal handler of the module")
            if self.orphaned():
                return True
            if self.signals.read_fd in ready and (stop := self.signals.requested()) is not None:
                log.info("%s stopping: %s received", self.name, signal.Signals(stop).name)
                return False
            if self.channel.socket in ready:
                self._supervisor_message()
            if self.runner is not None and self.runner.fd in ready:
                for result in self.runner.results():
                    self.channel.send(result)
            now = time.monotonic()
            if manual and self.ready_pipe[0] in ready:
                manual = False
                poller.unregister(self.ready_pipe[0])
                self._report_ready()
                if probe is not None:
                    probe.start(now)
            if now >= next_beat:
                next_beat = now + heartbeat_interval
                bus.sync()  # subscribers count the losses at the end of a burst
                self.channel.heartbeat(
                    {**bus.counters(), **resilience.counts()},
                    bus.busy_for(),
                    **metrics.REGISTRY.heartbeat_fields(),  # the module's own, when they changed
                )
                self._check_wakeup_fd()
            if probe is not None and not manual and now >= probe.next_due:
                message = probe.tick(now)
                if message is not None:
                    self.channel.unhealthy(message, probe.failures)

    def _check_wakeup_fd(self) -> None:
        """Say once if the module took the signal wake-up fd (asyncio's `add_signal_handler`
        does): stops still arrive, through our handler, but a SIGTERM that another thread
        received is then noticed only at the next heartbeat."""
        if not self.wakeup_fd_taken and self.signals.wakeup_fd_taken():
            self.wakeup_fd_taken = True
            log.info(
                "the module replaced the signal wake-up fd (asyncio's add_signal_handler does);"
                " SIGTERM still stops it, through the shim's handler"
            )

    def _report_ready(self) -> None:
        self.channel.ready(contained=self.contained, run=self.runner is not None)
        log.debug("%s ready", self.name)

    def _supervisor_message(self) -> None:
        """A message from the supervisor while serving: `run` calls the module's run()."""
        try:
            message = self.channel.receive(0)
        except ValueError:
            return
        if message is not None and message.get("kind") == protocol.RUN and self.runner:
            self.runner.request(message)


def _health_probe(module: ModuleType, spec: protocol.Spec) -> HealthProbe | None:
    """The probe of the module's `health()`, if it defines one."""
    check = getattr(module, "health", None)
    if not callable(check):
        return None
    interval = float(spec.get("health_interval", 10.0))
    return HealthProbe(check, interval, int(spec.get("health_retries", 3)))
