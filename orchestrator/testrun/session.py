"""`python -m orchestrator.testrun.session RESULT TIMEOUT CLI_PID -- COMMAND...`: run `orchestrator
test`'s pytest so that, whatever its tests do, nothing they started outlives the command.

The CLI starts this small process between itself and pytest, because making the CLI itself a
child subreaper would adopt (and sweep) orphans that are none of the test run's business where the
command runs in-process. Here:

- pytest runs in a process group of its own, so that a test's `os.killpg(0, ...)` ends pytest,
  not the CLI (which then reports it), and Ctrl+C, SIGTERM and SIGHUP reach it only through us:
  interrupted as by Ctrl+C, so that its teardown runs (a `module_process` stops its supervisor),
  then killed after `TEARDOWN` seconds. `TIMEOUT` (0: none) interrupts it the same way.
- This process is a child subreaper: what a test started in a session of its own, and the
  `module_process` harness's supervisors (daemons), are reparented to it, not to init.
- `module_process` puts its projects under `ENV_HARNESS_BASE`: once pytest has ended, however it
  ended (SIGKILL, `os._exit`), each supervisor still running there gets `orchestrator down`,
  then every process left below this one is killed.

It writes `RESULT`: pytest's exit code (negative: the signal that killed it), whether the
timeout interrupted it, and how many processes were left; exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from module_sdk.harness_guard import ENV_HARNESS_BASE
from module_sdk.process import (
    PR_SET_CHILD_SUBREAPER,
    SignalPipe,
    children_of,
    die_with_parent,
    kill_descendants,
    prctl,
)

TEARDOWN = 30.0  # seconds an interrupted pytest has for its teardown before it is killed
CLEAN_UP = 60.0  # seconds for everything after pytest: the `down`s, then the sweeps
# From a stop signal, this process ends within SESSION_BOUND (the CLI waits longer than that).
SESSION_BOUND = TEARDOWN + CLEAN_UP
_DOWN_TIMEOUT = 30.0  # seconds for the `down` of a supervisor a dead test left running
_SWEEP_RESERVE = 10.0  # seconds of CLEAN_UP the `down`s leave for the sweeps
_SWEEPS = 20  # rounds of kill-and-reap: what a dying process forks is caught by the next
_REAP_WAIT = 2.0  # seconds a round waits for what it killed to be reaped
_SAME_STOP = 1.0  # seconds: a signal this soon after the first is that one again (Ctrl+C
# reaches the CLI, which passes it on as SIGTERM, and us), not a second asking to kill now
_KILLED_POLL = 0.05  # seconds between looks at a pytest killed but not reaped yet (D state)


def main(argv: list[str]) -> int:
    result, timeout, cli_pid = Path(argv[0]), float(argv[1]), int(argv[2])
    command = argv[argv.index("--") + 1 :]
    die_with_parent(signal.SIGTERM)  # the CLI killed: stop as it would have asked
    signals = SignalPipe((signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP))
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    base = Path(tempfile.mkdtemp(prefix="orch-t-", dir="/tmp"))  # ipc paths below stay short
    try:
        pytest = subprocess.Popen(
            command,
            env={**os.environ, ENV_HARNESS_BASE: str(base)},
            process_group=0,
            preexec_fn=_default_sigint,  # noqa: PLW1509  (no thread runs here)
        )
        stop: list[int] = [] if os.getppid() == cli_pid else [signal.SIGTERM]
        code, timed_out = _wait(pytest, signals, timeout, stop)
        left = _clean_up(base, pytest.pid, time.monotonic() + CLEAN_UP)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result.write_text(json.dumps({"exit": code, "timed_out": timed_out, "left": left}))
    return 0


def _default_sigint() -> None:
    # Interruptible whatever we inherited: started with SIGINT ignored (a script's `cmd &`),
    # pytest slept through the interruption and was killed, its teardown never run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait(
    pytest: subprocess.Popen[bytes], signals: SignalPipe, timeout: float, stop: list[int]
) -> tuple[int, bool]:
    """Reap children until pytest has ended; its exit code, and whether the timeout ended it.
    `stop` holds a stop signal that came before we could hear it."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    killed_at: float | None = None  # when pytest is killed if its teardown takes longer
    first_at = 0.0  # when it was interrupted
    killed, timed_out = False, False
    while True:
        for pid, status in _reaped():
            if pid == pytest.pid:
                pytest.returncode = os.waitstatus_to_exitcode(status)
                return pytest.returncode, timed_out
        now = time.monotonic()
        asked = [s for s in (*stop, *signals.pending()) if s != signal.SIGCHLD]
        stop.clear()
        if deadline is not None and now >= deadline and killed_at is None:
            timed_out = True
            asked.append(signal.SIGINT)
        if asked and killed_at is None:
            _signal_group(pytest.pid, signal.SIGINT)  # as Ctrl+C in a terminal does
            killed_at, first_at = now + TEARDOWN, now
            asked = []
        late = killed_at is not None and now >= killed_at
        if (
            killed_at is not None
            and not killed
            and (late or (asked and now - first_at >= _SAME_STOP))
        ):
            _signal_group(pytest.pid, signal.SIGKILL)  # a second signal, or teardown too long
            killed = True
        if killed:  # until it is reaped (SIGCHLD wakes us): a look now and then, not a spin
            wait: float | None = _KILLED_POLL
        else:
            wake = [
                t for t in (deadline if killed_at is None else None, killed_at) if t is not None
            ]
            wait = max(0.0, min(wake) - now) if wake else None
        select.select([signals.read_fd], [], [], wait)


def _reaped() -> list[tuple[int, int]]:
    """Every child that has ended (pytest, and orphans adopted): pid and wait status."""
    found: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        found.append((pid, status))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _clean_up(base: Path, pytest_pgid: int, deadline: float) -> int:
    """Stop the supervisors of `module_process` projects left under `base`, then kill every
    process left below this one, by `deadline`; how many were left."""
    for root in sorted(base.iterdir()):
        budget = min(_DOWN_TIMEOUT, deadline - _SWEEP_RESERVE - time.monotonic())
        if budget < 1.0:
            break  # the sweeps below kill what is left
        if (root / "run").exists() and (root / "config").is_dir():
            _down(root, budget)
    _signal_group(pytest_pgid, signal.SIGKILL)  # what the tests left in pytest's group
    me, left = os.getpid(), set[int]()
    for _ in range(_SWEEPS):
        killed = kill_descendants()
        left.update(killed)
        until = min(time.monotonic() + _REAP_WAIT, max(deadline, time.monotonic() + 0.1))
        while (children := children_of(me)) and time.monotonic() < until:
            if not _reaped():  # one not killed yet (adopted meanwhile) waits for the next round
                select.select([], [], [], 0.005)
        if (not killed and not children) or time.monotonic() >= deadline:
            break
    return len(left)


def _down(root: Path, timeout: float) -> None:
    """`orchestrator down` for the `module_process` project at `root` (the harness's own
    environment: its run base)."""
    env = {**os.environ, "ORCHESTRATOR_RUN_BASE": str(root / "run")}
    env.pop("ORCHESTRATOR_CONFIG", None)
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        subprocess.run(
            [sys.executable, "-m", "orchestrator", "down", "-c", str(root / "config")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
