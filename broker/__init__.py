"""The message broker: an XSUB/XPUB forwarder run by libzmq's own proxy, in a process of its own
(`python -m broker`). Imports nothing of ours.

The package itself holds only the names the supervisor shares with the broker's process; `Broker`
and `BrokerError` load `broker.proxy` when first used, so that the supervisor, which starts the
broker but never runs it, does not carry the proxy and the grouped-delivery code in its memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.proxy import Broker, BrokerError

# "<server secret key> <client public key>" (z85, whose alphabet has no space), for a tcp bus: in the broker's environment,
# which only its owner can read, never on its command line, which everyone can.
ENV_CURVE = "ORCHESTRATOR_BUS_CURVE"

# The line prefix of the broker's grouped-delivery counters on its stdout (then one JSON object).
GROUPS_PREFIX = "groups "
# The line prefix of the redelivering groups with members, whenever they change: one JSON object
# `{"part": i, "of": n, "groups": [[name, pattern], ...]}` per line, the n parts making one list.
KEPT_PREFIX = "kept "

__all__ = ["ENV_CURVE", "GROUPS_PREFIX", "KEPT_PREFIX", "Broker", "BrokerError"]


def __getattr__(name: str) -> Any:
    if name in ("Broker", "BrokerError"):
        from broker import proxy  # noqa: PLC0415

        return getattr(proxy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
