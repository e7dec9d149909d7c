"""Probe module: adopts an orphan, and has a child of its own that it waits for late.

It starts a child that exits at once with code 3, which it does not wait for yet, and a daemon
that double-forks (its parent exits, so this process, a subreaper, adopts it), whose pid it writes
to `config["daemon_file"]`. Once the daemon has exited and been reaped, it writes to
`config["report"]` what `Popen.poll()` says of its own child: 3, unless someone reaped it first."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

DAEMON = """
import os, sys, time
os.setsid()
daemon = os.fork()
if daemon:
    with open(sys.argv[1], "a") as sink:
        sink.write(f"{daemon}\\n")
    os._exit(0)
time.sleep(3600)
"""


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    own = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    subprocess.run([sys.executable, "-c", DAEMON, config["daemon_file"]], check=True)
    daemon = int(Path(config["daemon_file"]).read_text())
    threading.Thread(target=_report, args=(own, daemon, config["report"]), daemon=True).start()


def _report(own: subprocess.Popen[bytes], daemon: int, report: str) -> None:
    while True:
        try:
            os.kill(daemon, 0)  # alive, or a zombie nobody has reaped yet
        except ProcessLookupError:
            break
        time.sleep(0.01)
    Path(report).write_text(f"{own.poll()}\n")


def shutdown() -> None:
    pass
