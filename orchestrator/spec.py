"""What a module process is told when it says hello: everything it needs to run its module."""

from __future__ import annotations

from module_sdk import protocol
from orchestrator.child import ManagedChild
from orchestrator.config import BusSection, ErrorHandlingSection, ModuleSpec
from orchestrator.isolation import bus_endpoint

HANDSHAKE_TIMEOUT = 10.0  # seconds a module may take to prove its bus path, at most


def handshake_timeout(spec: ModuleSpec) -> float:
    """Seconds module `spec` may take to prove its bus path: `HANDSHAKE_TIMEOUT`, or its
    `start_timeout` if shorter."""
    return min(HANDSHAKE_TIMEOUT, spec.supervision.start_timeout)


def module_spec(
    child: ManagedChild,
    *,
    bus: BusSection,
    xsub: str,
    xpub: str,
    groups: str | None = None,
    curve: dict[str, str] | None,
    log_level: str,
    error_handling: ErrorHandlingSection | None = None,
    concurrency: int = 1,
) -> protocol.Spec:
    """The SPEC message for `child`, with the limits of the bus in force (`bus`: a reload's bus
    changes wait for the next `up`, as the broker's do), the defaults of the module's `@retry`
    and `@circuit_breaker`, and the callback threads it is granted (`concurrency`)."""
    errors = error_handling if error_handling is not None else ErrorHandlingSection()
    spec = child.spec
    return {
        "kind": protocol.SPEC,
        "protocol": protocol.VERSION,
        "path": str(spec.path),
        "config": dict(spec.config),
        "xsub": bus_endpoint(spec, xsub),  # reachable as the module's user
        "xpub": bus_endpoint(spec, xpub),
        "heartbeat_interval": spec.supervision.heartbeat_interval,
        "handshake_timeout": handshake_timeout(spec),
        "high_water_mark": bus.high_water_mark,
        "max_message_size": bus.max_message_bytes,
        "log_level": spec.log_level or log_level,
        "log_format": child.log.format,
        "curve": curve,
        "log": str(child.log.path),
        "error_handling": {
            "retry_max_attempts": errors.retry_max_attempts,
            "retry_wait_min": errors.retry_wait_min,
            "retry_wait_max": errors.retry_wait_max,
            "circuit_breaker_fail_max": errors.circuit_breaker_fail_max,
            "circuit_breaker_reset_timeout": errors.circuit_breaker_reset_timeout,
        },
        "concurrency": concurrency,
        "ready": spec.supervision.ready,
        "health_interval": spec.supervision.health_interval,
        "health_retries": spec.supervision.health_retries,
        "groups": bus_endpoint(spec, groups) if groups is not None else None,
        "group": spec.work_group,
        "redeliver": spec.redeliver,
    }
