"""What a module process is told when it says hello: everything it needs to run its module."""

from __future__ import annotations

from module_sdk import protocol
from orchestrator.child import ManagedChild
from orchestrator.config import BusSection

HANDSHAKE_TIMEOUT = 10.0  # seconds a module may take to prove its bus path, at most


def module_spec(
    child: ManagedChild,
    *,
    bus: BusSection,
    xsub: str,
    xpub: str,
    groups: str | None = None,
    curve: dict[str, str] | None,
    log_level: str,
) -> protocol.Spec:
    """The SPEC message for `child`, with the limits of the bus in force (`bus`: a reload's bus
    changes wait for the next `up`, as the broker's do)."""
    spec = child.spec
    return {
        "kind": protocol.SPEC,
        "path": str(spec.path),
        "config": dict(spec.config),
        "xsub": xsub,
        "xpub": xpub,
        "heartbeat_interval": spec.supervision.heartbeat_interval,
        "handshake_timeout": min(HANDSHAKE_TIMEOUT, spec.supervision.start_timeout),
        "high_water_mark": bus.high_water_mark,
        "max_message_size": bus.max_message_bytes,
        "log_level": spec.log_level or log_level,
        "log_format": child.log.format,
        "curve": curve,
        "log": str(child.log.path),
        "groups": groups,
        "group": spec.group,
        "redeliver": spec.redeliver,
    }
