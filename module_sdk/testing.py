"""Helpers for a module's unit tests: an in-process event bus and loading a module by its path.

    from module_sdk.testing import InProcessBus, load_module

    producer = load_module("modules-backend/mod-dummy-producer")
    bus = InProcessBus()
    producer.initialize(bus, {"publish_interval": 60})
    assert check_health(producer) is None   # healthy (or no health() at all)

`InProcessBus` has the `EventBus` API of `module_sdk.api` and validates like the ZeroMQ bus, but it
delivers synchronously, in the publishing thread. With pytest, the `event_bus` and `module_loader`
fixtures of `module_sdk.pytest_plugin` are available without any import.

For code with `@retry` and `@circuit_breaker`: `no_backoff()` (a context manager, or the
`no_backoff` fixture) retries at once, and `resilience_counts()` says what was counted.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from module_sdk import loader
from module_sdk.codec import decode_envelope, encode_envelope
from module_sdk.event import Event, EventCallback, Pattern, validate_event_type
from module_sdk.groups import check_group
from module_sdk.health import check_once
from module_sdk.resilience import counts as resilience_counts
from module_sdk.resilience import no_backoff
from module_sdk.resilience import reset_counts as reset_resilience_counts

__all__ = [
    "InProcessBus",
    "ModuleLoader",
    "check_health",
    "load_module",
    "no_backoff",
    "reset_resilience_counts",
    "resilience_counts",
]

log = logging.getLogger(__name__)


class InProcessBus:
    """An `EventBus` (see `module_sdk.api.EventBus`) for tests, within one process.

    `publish()` validates the event type (ValueError) and that the data is msgpack-serialisable
    (TypeError), then calls every matching callback at once, in the publishing thread, with the data
    as msgpack round-trips it (tuples become lists, except as dict keys, ...): what a subscriber
    of the real bus sees.
    It is thread-safe; callbacks run outside its lock, so they may subscribe or publish themselves.

    A callback that raises is logged with its traceback and counted in `callback_errors`; the other
    callbacks still get the event. As on the real bus, that includes `SystemExit` and
    `KeyboardInterrupt`: a callback's `sys.exit()` does not end the module, or the test session. With `raise_errors=True`, `publish()` instead re-raises the first
    such error once every callback has run (the others are still logged).

    Every published event, matched by a subscription or not, is recorded in `published`;
    `events(pattern)` returns those that match a subscription pattern. `ready()` (which a module
    with `ready: manual` calls) sets the `is_ready` event.

    `subscribe(..., group="name")` is accepted as on the real bus: each event of the group goes to
    one of the callbacks subscribed with that group and pattern (in turn); there is no other
    member, and no crash to redeliver after, so `redeliver` changes nothing here.
    """

    def __init__(self, source: str = "test", *, raise_errors: bool = False) -> None:
        self.source = source
        self.raise_errors = raise_errors
        self.published: list[Event] = []
        self.callback_errors = 0
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[Pattern, list[EventCallback]]] = {}
        self._grouped: dict[tuple[str, str], tuple[Pattern, list[EventCallback]]] = {}
        self._turn = itertools.count()
        self._ids = itertools.count(1)
        self._id_prefix = f"{self.source}-{os.urandom(3).hex()}-"
        self.is_ready = threading.Event()

    def subscribe(
        self,
        pattern: str,
        callback: EventCallback,
        *,
        group: str | None = None,
        redeliver: bool | None = None,
    ) -> None:
        """See `module_sdk.api.EventBus.subscribe`."""
        parsed = Pattern.parse(pattern)
        if not callable(callback):
            raise TypeError(f"callback for {pattern!r} is not callable")
        with self._lock:
            if group:
                key = (check_group(group), parsed.text)
                self._grouped.setdefault(key, (parsed, []))[1].append(callback)
            else:
                self._subscriptions.setdefault(parsed.text, (parsed, []))[1].append(callback)

    def unsubscribe(
        self, pattern: str, callback: EventCallback, *, group: str | None = None
    ) -> None:
        """See `module_sdk.api.EventBus.unsubscribe`."""
        parsed = Pattern.parse(pattern)
        with self._lock:
            table: dict[Any, tuple[Pattern, list[EventCallback]]] = (
                self._grouped if group else self._subscriptions
            )
            key = (group, parsed.text) if group else parsed.text
            entry = table.get(key)
            if entry is None or callback not in entry[1]:
                return
            entry[1].remove(callback)
            if not entry[1]:
                del table[key]

    def clear(self) -> None:
        """See `module_sdk.api.EventBus.clear`."""
        with self._lock:
            self._subscriptions.clear()
            self._grouped.clear()

    def publish(self, event_type: str, data: Any = None) -> None:
        """See `module_sdk.api.EventBus.publish`. Returns once every matching callback has run."""
        validate_event_type(event_type)
        with self._lock:
            event_id = f"{self._id_prefix}{next(self._ids):x}"
        body = encode_envelope(self.source, event_id, time.time(), data)
        source, event_id, sent, delivered, _ = decode_envelope(body)
        event = Event(event_type, delivered, source, event_id, sent)
        # The record gets its own copy of the data, so a callback that mutates it cannot change it.
        record = Event(event_type, decode_envelope(body)[3], source, event_id, sent)
        with self._lock:
            self.published.append(record)
            callbacks = [
                callback
                for parsed, entry in self._subscriptions.values()
                if parsed.matches(event_type)
                for callback in entry
            ]
            callbacks += [  # one member of each group
                entry[next(self._turn) % len(entry)]
                for parsed, entry in self._grouped.values()
                if parsed.matches(event_type)
            ]
        first_error: BaseException | None = None
        for callback in callbacks:
            try:
                callback(event)
            except BaseException as exc:  # sys.exit() and Ctrl+C too, as the real bus does
                with self._lock:
                    self.callback_errors += 1
                if self.raise_errors and first_error is None:
                    first_error = exc
                    continue
                log.exception(
                    "callback %s for %s (from %s) raised",
                    getattr(callback, "__qualname__", repr(callback)),
                    event_type,
                    source,
                )
        if first_error is not None:
            raise first_error

    def ready(self) -> None:
        """See `module_sdk.api.EventBus.ready`: sets `is_ready` (from any thread)."""
        self.is_ready.set()

    def events(self, pattern: str = "*") -> list[Event]:
        """The published events whose type matches `pattern` (as for `subscribe`), oldest first."""
        parsed = Pattern.parse(pattern)
        with self._lock:
            return [event for event in self.published if parsed.matches(event.type)]


def check_health(module: ModuleType) -> str | None:
    """Call the module's `health()` once, as the shim does: None when it is healthy (or has no
    `health()`), else the message the supervisor would restart it with (`unhealthy: <message>`).
    A `health()` that raises is unhealthy with the exception as the message."""
    check = getattr(module, "health", None)
    return check_once(check) if callable(check) else None


class ModuleLoader(Protocol):
    """The type of `load_module` (and of the `module_loader` pytest fixture)."""

    def __call__(self, path: str | os.PathLike[str], name: str | None = None) -> ModuleType: ...


def load_module(path: str | os.PathLike[str], name: str | None = None) -> ModuleType:
    """Import the module file or package directory at `path` as the supervisor would.

    `name` defaults to the file's stem or the directory's name; dashes are fine (`mod-x` is imported
    as `mod_x`). Each call imports the module afresh, with new module globals. Raises
    `module_sdk.loader.ModuleLoadError` if the import fails or the module lacks `initialize` or
    `shutdown`.
    """
    resolved = Path(path).resolve()
    if name is None:
        name = resolved.name if resolved.is_dir() else resolved.stem
    return loader.load_module(name, resolved)
