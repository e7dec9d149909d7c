"""A module's `run()`, called when its schedule is due: the supervisor asks over the child
channel, a thread of its own calls `run()` (the bus and the callbacks go on meanwhile), and the
shim's loop, woken through a pipe, sends the result back."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from module_sdk import protocol

log = logging.getLogger("module_sdk.runner")


class Runner:
    """Calls `run` once per request, each in its own thread (whether runs may overlap is the
    supervisor's `overlap:` setting); `results()` hands back the finished ones."""

    def __init__(self, run: Callable[[], object], pid: int) -> None:
        self._run = run
        self._pid = pid
        self._lock = threading.Lock()
        self._done: list[protocol.RunResult] = []
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False

    @property
    def fd(self) -> int:
        """Readable when a run has finished."""
        return self._wake_read

    def request(self, message: dict[str, object]) -> None:
        """The supervisor's `run` message: start a run (one with a malformed id is ignored)."""
        run_id = message.get("id")
        if not isinstance(run_id, int) or isinstance(run_id, bool):
            return
        threading.Thread(
            target=self._call, args=(run_id,), name=f"run-{run_id}", daemon=True
        ).start()

    def _call(self, run_id: int) -> None:
        started = time.monotonic()
        ok, error = True, ""
        try:
            self._run()
        except Exception as exc:
            log.exception("run() raised")
            ok, error = False, f"run() raised {type(exc).__name__}: {exc}"
        except BaseException as exc:  # sys.exit() in run() ends this thread, not the module
            log.error(
                "run() raised %s (%s): the run failed; the module runs on", type(exc).__name__, exc
            )
            ok, error = False, f"run() raised {type(exc).__name__}: {exc}"
        result = protocol.RunResult(
            kind=protocol.RUN_RESULT,
            pid=self._pid,
            id=run_id,
            ok=ok,
            error=error[:1000],
            seconds=round(time.monotonic() - started, 6),
        )
        with self._lock:
            self._done.append(result)
            if self._closed:  # the module stopped meanwhile: its number may be another file's now
                return
            # A full pipe holds wake-ups already: one is enough.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_write, b"\0")

    def results(self) -> list[protocol.RunResult]:
        """The runs finished since the last call."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass
        with self._lock:
            done, self._done = self._done, []
        return done

    def close(self) -> None:
        """Close the wake-up pipe; a run still going ends without a word."""
        with self._lock:
            self._closed = True
            os.close(self._wake_read)
            os.close(self._wake_write)
