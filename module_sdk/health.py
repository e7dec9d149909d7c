"""A module's own health check: the optional `health()` next to `initialize()` and `shutdown()`.

`health()` returns True or None when the module is healthy, and False or a message when it is not;
raising counts as unhealthy too, with the exception as the message. The shim calls it every
`health_interval` seconds on a thread of its own, so that a check that hangs never holds up the
heartbeats: one still running when its interval is over counts as a failure (and no second call
starts while it hangs; what it returns late is no news: a check always slower than its interval
keeps failing, and is not "healthy again" each time it ends). A check whose thread cannot start
(a pids limit, `TasksMax` or RLIMIT_NPROC used up for a while) is one failed check too, read at
the next tick; the module runs on, and the next tick tries again. After `health_retries` failures
in a row, the shim tells the supervisor, which restarts the module with the reason
`unhealthy: <message>`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from module_sdk.protocol import MESSAGE_LIMIT

log = logging.getLogger("module_sdk.health")

HealthCheck = Callable[[], object]


def bounded_message(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """`text` as one printable line of at most `limit` characters: control characters (newlines
    and escapes included) become spaces, and a longer text is cut with an ellipsis."""
    head = str(text)[: 2 * limit]  # a huge text is cut before it is looked at
    line = "".join(ch if ch.isprintable() else " " for ch in head).strip()
    if len(line) > limit:
        return line[: max(0, limit - 1)] + "…"
    return line


def verdict(result: object) -> str | None:
    """What a `health()` result means: None when healthy, else the message to report."""
    if result is None or result is True:
        return None
    if result is False:
        return "health() returned False"
    if isinstance(result, str):
        return bounded_message(result) or "health() returned an empty message"
    shown = bounded_message(repr(result), 80)
    return f"health() returned {shown} (expected True, None, False or a message)"


def check_once(check: HealthCheck) -> str | None:
    """Call `check` once in this thread: None when healthy, else the message (an exception is
    the message)."""
    try:
        result = check()
    except Exception as exc:
        return bounded_message(f"health() raised {type(exc).__name__}: {exc}")
    return verdict(result)


class HealthProbe:
    """Runs `check` every `interval` seconds off the caller's thread and counts the failures in
    a row. The caller (the shim's loop) calls `tick(now)` once `next_due` has come."""

    def __init__(self, check: HealthCheck, interval: float, retries: int) -> None:
        self._check = check
        self.interval = interval
        self.retries = max(1, retries)
        self.failures = 0  # failed checks in a row
        self.next_due = 0.0  # monotonic
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._late = False  # the running check was counted as failed for not returning in time
        self._outcome: list[str | None] = []  # the running check's verdict, once it returned
        # Why the check due now could not even start (no thread): read as its failure next tick.
        self._unstarted: str | None = None

    @property
    def busy(self) -> bool:
        """Whether a call of `health()` is in progress."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, now: float) -> None:
        """Begin: the first check starts now, its outcome is read one interval later."""
        self.next_due = now
        self.tick(now)

    def tick(self, now: float) -> str | None:
        """Read the outcome of the check started an interval ago, start the next one; returns
        the message to report once `retries` checks in a row have failed, else None."""
        message: str | None = None
        failed = False
        thread, unstarted, self._unstarted = self._thread, self._unstarted, None
        late = False  # a check counted as failed for being late: what it returned is no news
        if thread is not None:
            if thread.is_alive():
                failed, self._late = True, True
                message = f"health() did not return within {now - self._started:.3g}s"
            else:
                self._thread, late, self._late = None, self._late, False
                message = self._outcome[0] if self._outcome else "health() ended without a result"
                failed = message is not None and not late
        elif unstarted is not None:  # the check due an interval ago never ran
            failed, message = True, unstarted
        if failed:
            self.failures += 1
            log.warning("health check failed (%d of %d): %s", self.failures, self.retries, message)
        elif thread is not None and self.failures and not late:
            log.info("healthy again after %d failed check(s)", self.failures)
            self.failures = 0
        if self._thread is None:  # a hung check is left to finish: never two at once
            outcome: list[str | None] = []
            self._outcome = outcome
            self._started = now
            started = threading.Thread(
                target=self._run, args=(outcome,), name="module-sdk-health", daemon=True
            )
            try:
                started.start()
            except RuntimeError as exc:  # no task left (a pids limit): a failed check, not an end
                self._unstarted = bounded_message(f"health() could not run: {exc}")
            else:
                self._thread = started
        self.next_due = now + self.interval
        return message if self.failures >= self.retries else None

    def _run(self, outcome: list[str | None]) -> None:
        outcome.append(check_once(self._check))
