"""A member of a subscription group, as a process of its own, for tests/integration/test_groups.py.

`python group_member.py XSUB XPUB GROUPS NAME GROUP PATTERN REDELIVER DIR` joins GROUP for PATTERN,
prints `ready` once the broker confirmed it, and appends `<event id> <data n>` to DIR/NAME.log for
every event it gets. An event whose data has `stall` is claimed by the first member to create
DIR/stall.claim: it writes `stalled <event id>` and hangs in the callback, to be killed there.
An event whose data has `poison` makes it write `poisoned <event id>` and exit 1 in the callback.
It runs until its stdin closes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import zmq

from module_sdk.bus import ZmqEventBus
from module_sdk.event import Event


def main(argv: list[str]) -> int:
    xsub, xpub, groups, name, group, pattern, redeliver, directory = argv
    log_fd = os.open(os.path.join(directory, f"{name}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def on_event(event: Event) -> None:
        data: Any = event.data if isinstance(event.data, dict) else {}
        if data.get("poison"):
            os.write(log_fd, f"poisoned {event.id}\n".encode())
            os._exit(1)
        if data.get("stall") and _claim(os.path.join(directory, "stall.claim")):
            os.write(log_fd, f"stalled {event.id}\n".encode())
            time.sleep(3600)  # killed here
        os.write(log_fd, f"{event.id} {data.get('n')}\n".encode())

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    bus = ZmqEventBus(context, name, xsub, xpub, groups_endpoint=groups)
    bus.subscribe(pattern, on_event, group=group, redeliver=redeliver == "1")
    bus.handshake(10.0)
    bus.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    bus.close()
    context.destroy(linger=0)
    return 0


def _claim(path: str) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
