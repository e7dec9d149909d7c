"""A module's callbacks on a pool of threads, for `concurrency: N` (N > 1) in modules.yaml.

The bus's receiver thread decodes each event and hands it here; `N` worker threads run the
callbacks. Events of one type run one after the other, in the order they arrived (a type is
never on two workers at once); events of different types run at the same time. So a module
whose callbacks share state across event types must guard it with a lock, while one event
type's callbacks still see its events in order. With N = 1 (the default) there is no pool: the
receiver thread runs every callback itself, in order, as it always has.

At most `max_pending` events wait for a worker; past that the receiver waits too, the bus's
socket fills, and ZeroMQ drops what overflows it (counted as `dropped`), as when one callback
thread falls behind. Events still waiting when the bus closes are not run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from module_sdk.event import Event, EventCallback

log = logging.getLogger(__name__)

Callbacks = tuple[EventCallback, ...]
MAX_PENDING = 10_000


class CallbackPool:
    """`workers` threads running `run(event, callbacks)`, in order per key (the event type)."""

    def __init__(
        self,
        workers: int,
        run: Callable[[Event, Callbacks], None],
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if workers < 1 or max_pending < 1:
            raise ValueError("a callback pool needs at least one worker and one pending slot")
        self._run = run
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # a key became ready, or we stop
        self._room = threading.Condition(self._lock)  # a pending event was taken, or we stop
        # Per key with events waiting or running: its waiting events. A key with a queue is
        # either in `_ready` or on a worker (its queue may then be empty), never both.
        self._queues: dict[str, deque[tuple[Event, Callbacks]]] = {}
        self._ready: deque[str] = deque()
        self._pending = 0
        self._stopping = False
        self._busy: list[float | None] = [None] * workers  # when each worker's event began
        self._threads = [
            threading.Thread(
                target=self._serve, args=(index,), name=f"module-sdk-callback-{index}", daemon=True
            )
            for index in range(workers)
        ]

    @property
    def workers(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, event: Event, callbacks: Callbacks) -> None:
        """Queue `event` behind the others of `key`; waits while `max_pending` are queued."""
        with self._lock:
            while self._pending >= self._max_pending and not self._stopping:
                self._room.wait()
            if self._stopping:
                return
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = deque()
                self._ready.append(key)
                self._work.notify()
            queue.append((event, callbacks))
            self._pending += 1

    def busy_since(self) -> float | None:
        """When the longest-running callback now running began (monotonic), or None if idle."""
        started = [since for since in self._busy if since is not None]
        return min(started) if started else None

    def pending(self) -> int:
        """Events waiting for a worker."""
        return self._pending

    def stop(self, timeout: float) -> bool:
        """Let each worker finish the event it is on, drop the waiting ones, and join; False if a
        worker is still busy after `timeout` seconds."""
        with self._lock:
            self._stopping = True
            dropped, self._pending = self._pending, 0
            self._queues.clear()
            self._ready.clear()
            self._work.notify_all()
            self._room.notify_all()
        if dropped:
            log.debug("%d events were waiting for a callback thread at close", dropped)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _serve(self, index: int) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._stopping:
                    self._work.wait()
                if self._stopping:
                    return
                key = self._ready.popleft()
                queue = self._queues[key]
                event, callbacks = queue.popleft()
                self._pending -= 1
                self._room.notify()
                self._busy[index] = time.monotonic()
            try:
                self._run(event, callbacks)
            except BaseException:  # the run function logs a callback's Exception itself
                log.exception("a callback for %s ended its thread's work abnormally", event.type)
            finally:
                with self._lock:
                    self._busy[index] = None
                    if queue and not self._stopping:
                        self._ready.append(key)  # behind the keys already waiting: fair
                        self._work.notify()
                    elif not self._stopping:
                        del self._queues[key]
