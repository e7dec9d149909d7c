"""One configured webhook: its patterns, its bounded queue, its counters, its circuit breaker and
the health its log lines follow.

`push` runs on the caller's thread (the supervisor's loop); everything else runs on the worker
thread. The queue is the only state both touch, under a lock held for a few instructions.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from module_sdk.event import Pattern
from orchestrator.breaker import Breaker
from orchestrator.config.model import ErrorHandlingSection, Webhook
from orchestrator.notify.payload import Notice

log = logging.getLogger(__name__)


class Target:
    """A webhook and everything the worker keeps about it."""

    def __init__(
        self,
        hook: Webhook,
        name: str,
        patterns: tuple[Pattern, ...],
        errors: ErrorHandlingSection,
        queue_limit: int,
        *,
        previous: Target | None = None,
    ) -> None:
        """`previous`: the target of the same URL before a reload, whose counters go on here
        (Prometheus reads a counter that drops as a reset) and whose breaker is this one's (an
        endpoint that was failing is not hammered again because another setting changed)."""
        self.url = hook.url
        self.name = name  # what logs and stats show: scrubbed, no query string
        self.patterns = patterns
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": "orchestrator-webhook",
            "Accept-Encoding": "identity",  # a reply is never decoded: no use compressing it
        }
        for key, value in hook.headers.items():  # the configured ones win, whatever their case
            for default in [k for k in self.headers if k.lower() == key.lower()]:
                del self.headers[default]
            self.headers[key] = value
        self.delivered = self.failed = self.skipped_open = self.dropped = 0
        self.problem: str | None = None  # the kind of failure last logged; None while healthy
        self.task: Any = None  # the worker's drain task (an asyncio.Task) while it runs
        fail_max, reset_timeout = (
            errors.circuit_breaker_fail_max,
            errors.circuit_breaker_reset_timeout,
        )
        if previous is None:
            self._breaker = Breaker(name, fail_max, reset_timeout, on_open=self._opened)
        else:  # what the previous one counts from now on (deliveries it finishes) is not seen
            self.delivered, self.failed = previous.delivered, previous.failed
            self.skipped_open, self.dropped = previous.skipped_open, previous.dropped
            self.problem = previous.problem
            self._breaker = previous._breaker  # thread-safe: both workers may feed it a while
            self._breaker.configure(fail_max, reset_timeout, self._opened)
        self._queue: deque[Notice] = deque()
        self._limit = max(1, queue_limit)
        self._lock = threading.Lock()
        self._burst = 0  # drops since the queue last ran empty

    def matches(self, event_type: str) -> bool:
        return any(pattern.matches(event_type) for pattern in self.patterns)

    # -- the queue -----------------------------------------------------------------------------

    def push(self, notice: Notice) -> None:
        """Queue `notice`; when the queue is full the oldest one is dropped (logged once per
        burst)."""
        with self._lock:
            if len(self._queue) >= self._limit:
                self._queue.popleft()
                self.dropped += 1
                self._burst += 1
                first = self._burst == 1
            else:
                first = False
            self._queue.append(notice)
        if first:
            log.warning(
                "webhook %s: %d notifications waiting; dropping the oldest", self.name, self._limit
            )

    def pop(self) -> Notice | None:
        """The next notification, or None when the queue is empty (which ends a burst of drops)."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            burst, self._burst = self._burst, 0
        if burst:
            log.warning("webhook %s: %d notifications were dropped (queue full)", self.name, burst)
        return None

    def pending(self) -> int:
        return len(self._queue)

    def abandon(self) -> int:
        """Drop whatever is still queued (at close); returns how many."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
            self.dropped += count
        return count

    # -- outcomes ------------------------------------------------------------------------------

    def circuit_open(self, now: float) -> bool:
        """Whether deliveries are skipped: the circuit is open and not yet due a trial."""
        return self._breaker.retry_in(now) > 0

    def record(self, *, reachable: bool) -> None:
        """Feed the breaker one delivery's outcome: the endpoint answered, or retries ran out."""
        self._breaker.outcome(ok=reachable)

    def _opened(self, reopened: bool) -> None:
        """The circuit opened: its first opening is logged, a failed trial only at debug."""
        if reopened:
            log.debug("webhook %s: trial delivery failed; circuit open again", self.name)
            return
        log.warning(
            "webhook %s: circuit open for %gs after %d failed deliveries; "
            "notifications to it are skipped until then",
            self.name,
            self._breaker.reset_timeout,
            self._breaker.fail_max,
        )

    def attempt_failed(self, problem: str, reason: str, *, will_retry: bool) -> None:
        """One attempt failed; logged only when the kind of failure changes."""
        if self.problem == problem:
            return
        self.problem = problem
        then = "retrying" if will_retry else "not retrying"
        log.warning("webhook %s: delivery failing (%s); %s", self.name, reason, then)

    def succeeded(self) -> None:
        if self.problem is not None:
            self.problem = None
            log.info("webhook %s: delivering again", self.name)
        self.delivered += 1  # last: a reader that sees the count sees the rest done

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "skipped_open": self.skipped_open,
            "dropped": self.dropped,
            "queued": self.pending(),
            "breaker": self._breaker.state,
        }
