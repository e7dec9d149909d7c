"""What the bridge prints for the supervisor, one line each: both sides import these."""

from __future__ import annotations

from typing import Final

READY: Final = "ready"  # first line, once the local sockets are up
STATE_PREFIX: Final = "nats: "  # `nats: connected to URL`, `nats: disconnected: <why>`
COUNTS_PREFIX: Final = "counts: "  # `counts: <exported> <imported> ...` (COUNTS), when they change
COUNTS: Final = ("exported", "imported", "unsent", "refused", "bad")  # see cluster.counts
HOST_PREFIX: Final = "host: "  # `host: joined|lost|left|twin|skewed NAME [why]`, as they happen


def say(line: str) -> None:
    """One line for the supervisor, on stdout."""
    print(line, flush=True)
