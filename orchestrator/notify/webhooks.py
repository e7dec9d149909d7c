"""Webhook alerts: built-in events POSTed as JSON to the URLs in `notifications.webhooks`.

`WebhookNotifier.notify()` runs on the supervisor's loop and only queues: each webhook has its own
bounded queue (the oldest notification is dropped when it is full). One background thread,
started on the first notification, delivers them: an asyncio loop in which each webhook's queue is
drained by its own task, in order, so a slow or hanging endpoint delays only its own
notifications. Each delivery is retried (tenacity) on a 5xx, a timeout or a connection error,
and each webhook has a circuit breaker (pybreaker) that skips deliveries while it is open.

Importing this module imports neither httpx, tenacity nor asyncio: the worker thread does, when
the first notification is due (the supervisor's idle memory matters).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from module_sdk.event import Pattern
from orchestrator.config.model import ErrorHandlingSection, NotificationsSection, Webhook
from orchestrator.config.redact import Redactor
from orchestrator.notify.payload import Notice, display_url, safe_text

if TYPE_CHECKING:
    from orchestrator.notify.delivery import Worker
    from orchestrator.notify.target import Target

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
THREAD_NAME = "webhook-notifier"


class WebhookNotifier:
    """Sends the events that `notifications.webhooks` asks for. `notify()` and `stop()` never block
    (the supervisor's loop calls them); `join()` waits for the worker, `close()` does both. With
    no webhooks it starts no thread and wants nothing."""

    def __init__(
        self,
        notifications: NotificationsSection,
        errors: ErrorHandlingSection,
        redactor: Redactor,
        app_name: str,
        *,
        queue_limit: int = QUEUE_LIMIT,
        previous: WebhookNotifier | None = None,
    ) -> None:
        """`previous`: the notifier this one replaces (a reload): each webhook of the same URL
        keeps its counters and its circuit breaker."""
        self._errors = errors
        self._redactor = redactor
        self._app_name = app_name
        before = () if previous is None else previous.targets
        self._targets: tuple[Target, ...] = _targets(
            notifications.webhooks, errors, redactor, queue_limit, before
        )
        self._lock = threading.Lock()  # guards starting the worker against closing
        self._thread: threading.Thread | None = None
        self._worker: Worker | None = None  # published by the worker thread once it has a loop
        self._deadline: float | None = None  # set by close(): deliveries end by then

    @property
    def targets(self) -> tuple[Target, ...]:
        """The webhooks, in config order."""
        return self._targets

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def wants(self, event_type: str) -> bool:
        """Whether any webhook matches `event_type` (and the notifier is not closed)."""
        return self._deadline is None and any(t.matches(event_type) for t in self._targets)

    def notify(self, event_type: str, data: dict[str, Any], log_tail: list[str]) -> None:
        """Queue `event_type` for every webhook that wants it; returns at once, never raises."""
        try:
            if self._deadline is not None:
                return
            targets = [t for t in self._targets if t.matches(event_type)]
            if not targets:
                return
            notice = Notice(event_type, dict(data), [str(line) for line in log_tail], time.time())
            for target in targets:
                target.push(notice)
            self._start_or_wake()
        except Exception as exc:  # an alert must never take the supervisor down
            log.warning("webhooks: could not queue %s (%s)", event_type, type(exc).__name__)

    def stats(self) -> dict[str, Any]:
        """Per webhook (keyed by its scrubbed URL): delivered, failed, skipped_open, dropped,
        queued, and the breaker's state (`closed`, `open`, `half-open`)."""
        return {target.name: target.stats() for target in self._targets}

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to stop and return at once: deliveries in progress and queued get at
        most `timeout` seconds from now (in the background), the rest are dropped. Nothing is
        queued after this; a second call does not move the deadline."""
        timeout = max(0.0, timeout)
        with self._lock:
            if self._deadline is None:
                # Keep a little of the time for cancelling and closing connections.
                self._deadline = time.monotonic() + timeout - min(0.25, timeout / 4)
        worker = self._worker
        if worker is not None:
            worker.wake()

    def join(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for a stopped worker to end; whether it has (a worker
        that is somehow stuck is left behind, it is a daemon thread)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(max(0.0, timeout))
        if thread.is_alive():
            log.warning("webhooks: the worker did not stop within %gs; left behind", timeout)
            return False
        return True

    def close(self, timeout: float = 2.0) -> None:
        """`stop(timeout)`, then wait for the worker: returns within `timeout`. Blocks: not for
        the supervisor's loop."""
        end = time.monotonic() + max(0.0, timeout)
        self.stop(timeout)
        self.join(end - time.monotonic())

    # -- the worker ----------------------------------------------------------------------------

    def _start_or_wake(self) -> None:
        with self._lock:
            if self._deadline is not None:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
                return  # the worker looks at every queue when it starts
        worker = self._worker
        if worker is not None:  # None: it is starting, and will look at the queues
            worker.wake()

    def _closing(self) -> float | None:
        return self._deadline

    def _run(self) -> None:
        try:
            from orchestrator.notify.delivery import Worker  # noqa: PLC0415  (httpx: lazily)

            worker = Worker(
                self._targets, self._errors, self._redactor, self._app_name, self._closing
            )
            self._worker = worker  # from now on notify() wakes it; it reads the queues next
            worker.run()
        except Exception as exc:
            reason = safe_text(str(exc), self._redactor)
            log.error("webhooks: the delivery worker stopped: %s: %s", type(exc).__name__, reason)
            for target in self._targets:
                target.abandon()


def close_all(notifiers: list[WebhookNotifier], timeout: float = 2.0) -> None:
    """Stop every notifier at once, then wait for them all within one shared `timeout`: their
    deliveries end together, not one after the other."""
    for notifier in notifiers:
        notifier.stop(timeout)
    end = time.monotonic() + max(0.0, timeout)
    for notifier in notifiers:
        notifier.join(end - time.monotonic())


def _targets(
    hooks: tuple[Webhook, ...],
    errors: ErrorHandlingSection,
    redactor: Redactor,
    queue_limit: int,
    before: tuple[Target, ...] = (),
) -> tuple[Target, ...]:
    if not hooks:
        return ()
    from orchestrator.notify.target import Target  # noqa: PLC0415  (pybreaker, only if needed)

    targets: list[Target] = []
    names: set[str] = set()
    previous: dict[str, list[Target]] = {}  # URL -> its targets before, in order (one URL twice)
    for target in before:
        previous.setdefault(target.url, []).append(target)
    for number, hook in enumerate(hooks, 1):
        name = display_url(hook.url, redactor)
        if name in names:  # the same URL twice, two that differ only in what is hidden: its place
            name = f"{name} #{number}"  # in the list (no shown URL has " #", it starts a fragment)
        names.add(name)
        patterns = []
        for text in hook.events:
            try:
                patterns.append(Pattern.parse(text))
            except ValueError:
                log.warning("webhook %s: ignoring invalid event pattern %r", name, text)
        same = previous.get(hook.url)
        carried = same.pop(0) if same else None
        targets.append(Target(hook, name, tuple(patterns), errors, queue_limit, previous=carried))
    return tuple(targets)
