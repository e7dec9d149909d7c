"""A member of a subscription group for the groups benchmark, as a process of its own.

`python -m bench.group_worker XSUB XPUB GROUPS GROUP PATTERN`: joins GROUP for PATTERN with a
CPU-light handler (a count), prints `ready` once the broker confirmed the join, and runs until its
stdin closes. The broker's counters say how many events each member handled.
"""

from __future__ import annotations

import sys

import zmq

from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event


def main(argv: list[str]) -> int:
    xsub, xpub, groups, group, pattern = argv
    handled = 0

    def handle(event: Event) -> None:
        nonlocal handled
        handled += 1

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    bus = ZmqEventBus(context, f"worker-{group}", xsub, xpub, groups_endpoint=groups)
    bus.subscribe(pattern, handle, group=group)
    bus.handshake(10.0)
    bus.start()
    print("ready", flush=True)
    sys.stdin.read()
    bus.close()
    context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
