"""What happens after a module process ends: the record, the announcements, and the restart
policy (with the start breaker) applied to decide what comes next."""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING

from module_sdk import protocol
from orchestrator.child import LastExit, ManagedChild
from orchestrator.states import Action, ChildState, ExitReason, ExitStatus, decide_after_exit

if TYPE_CHECKING:
    from orchestrator.breaker import StartBreaker
    from orchestrator.manager import ChildManager

log = logging.getLogger(__name__)

_SHIM_EXIT_REASONS = {
    protocol.EXIT_LOAD_FAILED: ExitReason.LOAD_FAILED,
    protocol.EXIT_INIT_FAILED: ExitReason.INIT_FAILED,
}


def after_exit(
    manager: ChildManager, child: ManagedChild, status: ExitStatus, reason: ExitReason, error: str
) -> None:
    """Record how the module's process ended, announce it, and apply the restart policy (and the
    start breaker) to decide what comes next."""
    now = time.monotonic()
    settings = child.spec.supervision
    ran_stably = child.ready_at is not None and now - child.ready_at >= settings.stable_after
    if child.state is ChildState.STARTING:  # it never said ready: a failed start
        child.failed_spawn = child.spawns
        if reason is not ExitReason.STOPPED:
            _breaker(manager, child).record(started=False)
    child.last_exit = LastExit(status, reason, time.time(), error, child.pid)
    child.history.append(child.last_exit)
    child.process = None
    child.ready_at = None
    child.kill_reason = None  # it is dead: its timers (restart, waiting) run again
    level = logging.ERROR if reason.is_failure else logging.INFO
    detail = f": {error}" if error else ""
    log.log(level, "%s exited (%s, %s)%s", child.name, status.describe(), reason.value, detail)
    if reason.is_failure:
        manager.publish(
            "module.error",
            name=child.name,
            error=error or reason.value,
            reason=reason.value,
            exit_code=status.code,
            signal=status.signal,
        )
    manager.publish("module.unloaded", name=child.name)
    if child.removing:
        manager.forget(child)
        manager.start_waiting()
        return
    if child.restart_after_stop and not manager.shutting_down:
        child.restarts += 1
        child.consecutive_failures = 0
        if manager.start(child):
            manager.publish(
                "module.restarted", name=child.name, pid=child.pid, restarts=child.restarts
            )
        manager.start_waiting()
        return
    if reason.is_failure:
        child.consecutive_failures = 1 if ran_stably else child.consecutive_failures + 1
    else:
        child.consecutive_failures = 0
    decision = decide_after_exit(
        settings,
        reason,
        stop_requested=child.stop_requested or manager.shutting_down,
        consecutive_failures=child.consecutive_failures,
        recent_restarts=tuple(child.restart_times),
        now=now,
        jitter=_jitter(),
    )
    child.state, child.why, child.deadline = decision.state, decision.why, None
    if decision.action is Action.RESTART:
        delay = decision.delay
        if child.breaker is not None and child.breaker.retry_in(now) > delay:
            delay = child.breaker.retry_in(now)
            # `status` adds the time left: see ManagedChild.reason().
            child.why = (
                f"circuit open after {child.breaker.failures} failed starts "
                "(circuit_breaker_fail_max)"
            )
        child.deadline = now + delay
        child.restart_times.append(now)
        log.info("%s restarts in %.2fs", child.name, delay)
    elif decision.action is Action.FAIL:
        log.error(
            "%s failed: %s; it stays down until `orchestrator restart %s`",
            child.name,
            decision.why,
            child.name,
        )
        manager.publish("module.failed", name=child.name, reason=decision.why)
    manager.start_waiting()


def _breaker(manager: ChildManager, child: ManagedChild) -> StartBreaker:
    if child.breaker is None:
        # Imported at the first failed start: most supervisors never need pybreaker.
        from orchestrator.breaker import StartBreaker  # noqa: PLC0415

        errors = manager.config.error_handling
        child.breaker = StartBreaker(
            child.name, errors.circuit_breaker_fail_max, errors.circuit_breaker_reset_timeout
        )
    return child.breaker


def exit_reason(child: ManagedChild, status: ExitStatus) -> ExitReason:
    """Why the process ended: our own reason if we killed it, else what its exit says."""
    if child.kill_reason is not None:
        return child.kill_reason
    if child.stop_requested:
        return ExitReason.STOPPED
    if status.code in _SHIM_EXIT_REASONS:
        return _SHIM_EXIT_REASONS[status.code]
    return ExitReason.EXITED if status.code == 0 else ExitReason.CRASHED


def _jitter() -> float:
    return random.random()
