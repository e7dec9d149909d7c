"""What the numbers were measured on: CPU, cores, Python, pyzmq and libzmq, the commit."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import psutil
import zmq

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The `model name` of /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def describe() -> dict[str, Any]:
    """The machine and software versions, for the table header and results.json."""
    memory = psutil.virtual_memory()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_mb": memory.total // (1024 * 1024),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "msgpack": ".".join(str(part) for part in msgpack.version),
        "psutil": psutil.__version__,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "orchestrator", "module_sdk", "broker")),
    }


def headline(info: dict[str, Any]) -> str:
    """One line for the top of the table."""
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_mb']} MB; "
        f"load {' '.join(str(x) for x in info['load_average'])}; "
        f"Python {info['python']}, pyzmq {info['pyzmq']}, libzmq {info['libzmq']}, "
        f"msgpack {info['msgpack']}; commit {info['commit']}{' (dirty)' if info['dirty'] else ''}"
    )
