"""Probe module: prints a numbered line (`chatter N`, padded with dots to `pad` characters) every
`interval` seconds (default 0.01)."""

import threading
from typing import Any

_stop = threading.Event()


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    interval = float(config.get("interval", 0.01))
    pad = int(config.get("pad", 0))
    _stop.clear()

    def chat() -> None:
        count = 0
        while not _stop.wait(interval):
            count += 1
            print(f"chatter {count} ".ljust(pad, "."), flush=True)

    threading.Thread(target=chat, name="chatter", daemon=True).start()


def shutdown() -> None:
    _stop.set()
