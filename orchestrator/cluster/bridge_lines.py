"""What the bridge prints for the supervisor, one line each: both sides import these."""

from __future__ import annotations

from typing import Final

READY: Final = "ready"  # first line, once the local sockets are up
STATE_PREFIX: Final = "nats: "  # `nats: connected to URL`, `nats: disconnected: <why>`
COUNTS_PREFIX: Final = "counts: "  # `counts: <exported> <imported> ...` (COUNTS), when they change
COUNTS: Final = ("exported", "imported", "unsent", "refused", "bad")  # see cluster.counts
# `host: joined|lost|left|twin|skewed|forgot NAME [why]`, as they happen
HOST_PREFIX: Final = "host: "


def say(line: str) -> None:
    """One line for the supervisor, on stdout."""
    print(line, flush=True)
