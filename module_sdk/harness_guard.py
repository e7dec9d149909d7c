"""`python -m module_sdk.harness_guard ROOT`: the `module_process` harness's supervisor dies with
the test process that started it.

`RunningModule.start` starts this guard first, in a session of its own, its stdin the read end of
a pipe whose write end only the test process holds (the descriptor is not inherited by what it
runs, only by what it forks without exec). `RunningModule.stop` takes its supervisor down itself
and then writes one byte: the guard exits. If the test process dies first (SIGKILL from a CI
timeout, the OOM killer, `os._exit` in a test), the guard reads end-of-file instead, runs
`orchestrator down` for ROOT's project, whose environment it was started with, and removes ROOT.

Standard library only: it must start fast, and none of the test's code runs in it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

# Where `module_process` makes its projects, when set (`orchestrator test` sets it: it takes down
# whatever supervisor is left there once pytest has ended); /tmp otherwise.
ENV_HARNESS_BASE = "ORCHESTRATOR_HARNESS_BASE"
RELEASE = b"x"  # what `RunningModule.stop` writes once it has stopped everything itself
_DOWN_TIMEOUT = 60.0


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C is the test process's to handle
    try:
        said = os.read(0, 1)
    except OSError:
        said = b""
    if said == RELEASE:
        return 0
    if (root / "run").exists():
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            subprocess.run(
                [sys.executable, "-m", "orchestrator", "down", "-c", str(root / "config")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_DOWN_TIMEOUT,
                check=False,
            )
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
