"""The supervisor's side of the control socket: its replies (now, or once a waiter has one), and
what the control handler may ask of the supervisor, as narrow callables. The handler never holds
the `Supervisor`, so the supervisor imports the handler and not the other way round."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from orchestrator import control

if TYPE_CHECKING:
    from pathlib import Path

    from orchestrator.bridge_process import BridgeProcess
    from orchestrator.config import AppConfig
    from orchestrator.events import SystemEvents
    from orchestrator.forwarder import Forwarder
    from orchestrator.manager import ChildManager
    from orchestrator.reconcile import ReloadPlan

log = logging.getLogger(__name__)
# A waiter is called after every loop turn; it returns the reply once it has one.
Waiter = Callable[[], dict[str, Any] | None]
# Requests waiting for an answer: past these, a request is refused at once. A CLI has one request
# at a time; 4000 pipelined `wait_started` built 4000 status replies in one turn (18 s).
MAX_WAITING = 1024
MAX_WAITING_EACH = 4  # of one client
# What can wait for a command that waits (standbys: `quiet`): for this long after its answer
# went out (printing it and exiting takes a CLI tens of milliseconds of CPU), and for at most
# this long while it waits (a `restart` waiting on a dependency in a crash loop holds no one).
AFTER_ANSWER = 0.5
HOLD_AT_MOST = 3.0


class Replies:
    """Answers to control requests on the ROUTER socket `control`."""

    def __init__(self, control_socket: zmq.Socket[bytes]) -> None:
        self._socket = control_socket
        self._waiters: list[tuple[bytes, Waiter, float]] = []  # (client, waiter, since)
        self._waiting: Counter[bytes] = Counter()  # of each client
        self._answered = float("-inf")  # when a waited answer last went out

    def quiet(self, now: float) -> bool:
        """Whether no command waits for its answer (since less than HOLD_AT_MOST) and none got
        one in the last AFTER_ANSWER seconds: until then, the work that can wait (making
        standbys) does, so that `up -d` and `restart` have the CPU to finish first."""
        if now - self._answered < AFTER_ANSWER:
            return False
        return all(now - since >= HOLD_AT_MOST for _, _, since in self._waiters)

    def send(self, identity: bytes, answer: dict[str, Any]) -> bool:
        """Answer `identity` now; False if it cannot take it (it left, or does not read its
        replies). An answer that cannot be encoded is logged and answered as a failure (one
        request's answer must not stop the loop)."""
        return self._deliver(identity, _encoded(answer))

    def _deliver(self, identity: bytes, payload: bytes) -> bool:
        try:
            self._socket.send_multipart([identity, payload], zmq.NOBLOCK)
        except zmq.Again:  # ROUTER_MANDATORY, at the high-water mark: it does not read them
            log.debug("a control client does not read its replies: one dropped")
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: gone (a CLI that stopped waiting)
            log.debug("could not answer a control request: %s", exc)
            return False
        return True

    def wait_for(self, identity: bytes, waiter: Waiter) -> None:
        """Reply to `identity` once `waiter` returns an answer (checked after every loop turn);
        refuse at once past MAX_WAITING requests, or MAX_WAITING_EACH of that client."""
        if len(self._waiters) >= MAX_WAITING or self._waiting[identity] >= MAX_WAITING_EACH:
            mine = self._waiting[identity] >= MAX_WAITING_EACH
            already = f"{MAX_WAITING_EACH} of this client's" if mine else f"{MAX_WAITING}"
            self.send(identity, control.failure(f"{already} requests already wait for an answer"))
            return
        self._waiters.append((identity, waiter, time.monotonic()))
        self._waiting[identity] += 1

    def serve(self) -> None:
        """Send the answers that are ready (after a turn of the loop). A waiter several requests
        share is asked once, its answer encoded once (`wait_started`'s status)."""
        still: list[tuple[bytes, Waiter, float]] = []
        payloads: dict[Waiter, bytes | None] = {}
        for identity, waiter, since in self._waiters:
            if waiter not in payloads:
                answer = waiter()
                payloads[waiter] = None if answer is None else _encoded(answer)
            if (payload := payloads[waiter]) is None:
                still.append((identity, waiter, since))
                continue
            self._deliver(identity, payload)
            self._answered = time.monotonic()
            self._waiting[identity] -= 1
            if not self._waiting[identity]:
                del self._waiting[identity]
        self._waiters = still

    def close(self) -> None:
        """Tell every request still waiting that the supervisor stopped."""
        for identity, _, _ in self._waiters:
            self.send(identity, control.failure("the supervisor stopped"))
        self._waiters = []
        self._waiting.clear()


def _encoded(answer: dict[str, Any]) -> bytes:
    """`answer` encoded; one that cannot be is logged, and encoded as a failure."""
    try:
        return control.encode(answer)
    except (TypeError, ValueError, OverflowError) as exc:
        log.error("a control answer could not be encoded (%s: %s)", type(exc).__name__, exc)
        return control.encode(control.failure(f"the answer could not be encoded: {exc}"))


@dataclass(frozen=True)
class SupervisorPort:
    """The supervisor's side of the control requests: its modules, its replies and the few
    things only it knows."""

    manager: ChildManager
    forwarder: Forwarder
    send_reply: Callable[[bytes, dict[str, Any]], bool]  # False: the client cannot take it
    wait_for: Callable[[bytes, Waiter], None]  # reply once the waiter has an answer
    reload: Callable[[bool], tuple[ReloadPlan | None, str]]  # (dry_run) -> (plan, error)
    overview: Callable[[], dict[str, Any]]  # status: the supervisor, bus, system, config parts
    config: Callable[[], AppConfig]  # the config in force
    logs: Path  # where it logs, from its start on (a reload's `logging:` waits for `up`)
    bus_client: Callable[[], dict[str, str] | None]  # the CURVE keys a bus client needs
    events: Callable[[], SystemEvents | None]  # the supervisor's publisher, once the bus is up
    current_bridge: Callable[[], BridgeProcess | None]

    @property
    def bridge(self) -> BridgeProcess | None:
        """The cluster bridge, in cluster mode."""
        return self.current_bridge()
