"""Probe module: starts two processes that try to outlive it, and appends their pids to
`config["pid_file"]`, one a line: a child in a session of its own (`setsid`), then a daemon that
clears its environment and double-forks (its parent exits, so the daemon is orphaned at once)."""

import subprocess
import sys
from typing import Any

DAEMON = """
import os, sys, time
os.setsid()
daemon = os.fork()
if daemon:  # the intermediate: say who the daemon is, and leave it orphaned
    with open(sys.argv[1], "a") as sink:
        sink.write(f"{daemon}\\n")
    os._exit(0)
time.sleep(3600)
"""

SLEEPER = "import time; time.sleep(3600)"


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    pid_file = config["pid_file"]
    leader = subprocess.Popen([sys.executable, "-c", SLEEPER], start_new_session=True)
    with open(pid_file, "a") as sink:
        sink.write(f"{leader.pid}\n")
    subprocess.run([sys.executable, "-c", DAEMON, pid_file], env={}, check=True)


def shutdown() -> None:
    pass
