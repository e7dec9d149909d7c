"""`python -P -m orchestrator.cluster`: the cluster bridge as a process of its own, started and
restarted by the supervisor, so that nothing the NATS client or a peer does can stall or crash
the supervisor's loop.

Its settings come as JSON in the `ORCHESTRATOR_BRIDGE` environment variable (see `settings`). Its
first line on stdout is `ready` once its local sockets are up (NATS may come later), or
`error: <why>` before it exits 1. It runs until SIGTERM, or until the supervisor dies (end of file
on the lifeline pipe), or until NATS closes its connection for good: then it says `error: <why>`
too, and exits 1 to be restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from orchestrator.cluster.bridge import Bridge
from orchestrator.cluster.bridge_lines import say
from orchestrator.cluster.settings import ENV_BRIDGE, BridgeSettings


async def _serve(settings: BridgeSettings) -> str | None:
    """Run the bridge until it is told to stop; returns why NATS closed it, if it did."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    bridge = Bridge(settings)

    def told_to_stop() -> None:
        bridge.farewell = True  # an orderly stop: the other hosts hear that this one left
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, told_to_stop)
    if settings.lifeline is not None:
        loop.add_reader(settings.lifeline, stop.set)  # readable only at end of file
    await bridge.run(stop)
    return bridge.closed_for


def main() -> int:
    """Read the settings, forward until told to stop; returns the exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the spawner blocked some; exec kept that
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the supervisor's to handle
    try:
        settings = BridgeSettings.from_json(os.environ.pop(ENV_BRIDGE))
    except (KeyError, ValueError, TypeError) as exc:
        say(f"error: no valid {ENV_BRIDGE} settings ({type(exc).__name__})")
        return 1
    closed_for = asyncio.run(_serve(settings))
    if closed_for is not None:
        say(f"error: NATS closed the connection: {closed_for}")
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
