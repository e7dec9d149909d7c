"""Process start-up floors, measured in the same run as the figures they put in context."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench import stats

IMPORT_ZMQ = "import zmq, msgpack"


def fork_warm_interpreter(samples: int = 30) -> float:
    """Median ms from `os.fork()` of this (warm: zmq and msgpack imported) interpreter until the
    child has written one byte to a pipe the parent reads: the floor of a fork-server restart.
    Call it before this process starts any thread."""
    times = []
    for _ in range(samples):
        read_fd, write_fd = os.pipe()
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: prove it runs, then leave without any clean-up
            os.write(write_fd, b"x")
            os._exit(0)
        os.read(read_fd, 1)
        times.append(time.perf_counter() - start)
        os.waitpid(pid, 0)
        os.close(read_fd)
        os.close(write_fd)
    return stats.median(times) * 1000


def new_python_with_zmq(samples: int = 10) -> float:
    """Median ms of `python -c "import zmq, msgpack"` from spawn to exit."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORT_ZMQ], check=True, timeout=30)
        times.append(time.perf_counter() - start)
    return stats.median(times) * 1000


def parallel_pythons_with_zmq(count: int = 10, samples: int = 3) -> float:
    """Median ms until `count` concurrent `python -c "import zmq, msgpack"` have all exited: the
    floor of starting `count` module processes at once on this machine."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", IMPORT_ZMQ]) for _ in range(count)]
        try:
            for proc in procs:
                proc.wait(timeout=30)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        times.append(time.perf_counter() - start)
    return stats.median(times) * 1000


def cli_startup(samples: int = 5) -> float:
    """Median ms of `orchestrator --version`: what any CLI command pays before it does anything."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "--version"],
            check=True,
            timeout=30,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return stats.median(times) * 1000
