"""The worker thread's side: one asyncio loop, one httpx client, and one drain task per webhook that
has notifications queued. A webhook's notifications go out in order, one at a time; a slow or
hanging webhook holds only its own task, never the others.

Imported only by the worker thread, so that the supervisor pays for httpx, tenacity and asyncio
only once a notification is actually due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import cast

import httpx
import tenacity

from orchestrator.config.model import ErrorHandlingSection
from orchestrator.config.redact import Redactor
from orchestrator.notify.payload import Notice, safe_text
from orchestrator.notify.target import Target

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds, for each of connect, write, read and the pool
# Seconds for a whole attempt: a receiver that sends a byte now and then never lets a read
# time out, and would hold its webhook for ever.
ATTEMPT_TIMEOUT = 10.0
REPLY_READ_LIMIT = 4096  # bytes of a reply's body read, as sent (never decoded), before closing


def _quiet_http_loggers() -> None:
    """httpx logs every request with its full URL at INFO (query string and all), and httpcore
    its connections at DEBUG; webhook URLs may hold tokens. Unless someone set their levels on
    purpose, only their warnings get through."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


class _RetryableError(Exception):
    """A 5xx answer, a timeout or a connection error."""


class _RejectedError(Exception):
    """Any other answer that is not 2xx: retrying would get the same."""


class Worker:
    """Runs the loop until `closing()` returns a deadline, then lets the deliveries in progress
    finish until that deadline and cancels the rest. Created on the worker thread; `wake()` is
    the only method other threads call."""

    def __init__(
        self,
        targets: tuple[Target, ...],
        errors: ErrorHandlingSection,
        redactor: Redactor,
        app_name: str,
        closing: Callable[[], float | None],
    ) -> None:
        self._targets = targets
        self._redactor = redactor
        self._app_name = app_name
        self._closing = closing
        self._attempts = max(1, errors.retry_max_attempts)
        wait_min = max(0.0, errors.retry_wait_min)
        self._wait = tenacity.wait_exponential(
            multiplier=wait_min, min=wait_min, max=max(wait_min, errors.retry_wait_max)
        )
        _quiet_http_loggers()
        self._loop = asyncio.new_event_loop()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Have the loop look at the queues (thread-safe, never blocks, never raises)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to wake
            self._loop.call_soon_threadsafe(self._wake.set)

    def run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        timeout = httpx.Timeout(REQUEST_TIMEOUT)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            while True:
                deadline = self._closing()
                for target in self._targets:
                    if target.pending() and (target.task is None or target.task.done()):
                        target.task = asyncio.create_task(self._drain(target, client))
                if deadline is not None:
                    break
                await self._wake.wait()
                self._wake.clear()
            tasks = [t.task for t in self._targets if t.task is not None and not t.task.done()]
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        for target in self._targets:
            target.abandon()

    async def _drain(self, target: Target, client: httpx.AsyncClient) -> None:
        while (notice := target.pop()) is not None:
            try:
                await self._deliver(target, client, notice)
            except asyncio.CancelledError:
                target.dropped += 1  # abandoned at close
                raise
            except Exception as exc:  # a bug or a bad header value: count it, keep the worker
                target.failed += 1
                reason = f"{type(exc).__name__}: {safe_text(str(exc), self._redactor)}"
                target.attempt_failed("error", reason, will_retry=False)

    async def _deliver(self, target: Target, client: httpx.AsyncClient, notice: Notice) -> None:
        if target.circuit_open(time.monotonic()):
            target.skipped_open += 1
            return
        body = notice.body(self._app_name, self._redactor)
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_RetryableError),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = attempt.retry_state.attempt_number
                    await self._post(target, client, body, will_retry=number < self._attempts)
        except _RetryableError:
            target.record(reachable=False)
            target.failed += 1
        except _RejectedError:
            target.record(reachable=True)  # it answered: the endpoint is up, the request is wrong
            target.failed += 1
        else:
            target.record(reachable=True)
            target.succeeded()

    async def _post(
        self, target: Target, client: httpx.AsyncClient, body: bytes, *, will_retry: bool
    ) -> None:
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                status = await _status(client, target.url, body, target.headers)
        except TimeoutError:
            reason = f"timeout: no reply within {ATTEMPT_TIMEOUT:g}s"
            target.attempt_failed("retryable", reason, will_retry=will_retry)
            raise _RetryableError from None
        except httpx.TimeoutException as exc:
            target.attempt_failed(
                "retryable", f"timeout: {type(exc).__name__}", will_retry=will_retry
            )
            raise _RetryableError from None
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {safe_text(str(exc), self._redactor)}"
            target.attempt_failed("retryable", reason, will_retry=will_retry)
            raise _RetryableError from None
        if status >= 500:
            target.attempt_failed("retryable", f"HTTP {status}", will_retry=will_retry)
            raise _RetryableError
        if not 200 <= status < 300:
            target.attempt_failed("rejected", f"HTTP {status}", will_retry=False)
            raise _RejectedError


async def _status(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST `body` and return the reply's status, the only part of it that counts. Of its body at
    most `REPLY_READ_LIMIT` bytes (plus one network read) are read, raw: a small one lets the
    connection be used again, a huge one or a compression bomb is cut off, never taken in."""
    async with client.stream("POST", url, content=body, headers=headers) as response:
        read = 0
        raw = cast("AsyncGenerator[bytes, None]", response.aiter_raw())  # typed as an iterator
        async with contextlib.aclosing(raw) as chunks:
            async for chunk in chunks:
                read += len(chunk)
                if read >= REPLY_READ_LIMIT:
                    break
        return response.status_code
