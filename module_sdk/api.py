"""The interface a module programs against: what `initialize(event_bus, config)` receives."""

from __future__ import annotations

from typing import Any, Protocol

from module_sdk.event import EventCallback


class EventBus(Protocol):
    """The event bus handed to a module's `initialize()`.

    In a child process it is the ZeroMQ bus (`module_sdk.bus.ZmqEventBus`); any object with these
    methods (an in-process bus for unit tests, say) works the same for the module.
    """

    def subscribe(
        self,
        pattern: str,
        callback: EventCallback,
        *,
        group: str | None = None,
        redeliver: bool | None = None,
    ) -> None:
        """Call `callback(event)` for every event whose type matches `pattern`: an exact type
        (`test.ping`), a prefix (`test.*`) or `*`. Raises ValueError for an invalid pattern,
        or one over 255 characters (the limit event types have).

        With `group`, each such event goes to one member of the group only (the processes
        subscribed with that group and pattern); `redeliver=True` hands an event this member
        took but did not finish (it crashed) to another member. Both default to the module's
        `group:` and `redeliver:` settings; `group=""` subscribes ungrouped despite them."""
        ...

    def unsubscribe(
        self, pattern: str, callback: EventCallback, *, group: str | None = None
    ) -> None:
        """Stop calling `callback` for `pattern` (in `group`); does nothing if not subscribed."""
        ...

    def clear(self) -> None:
        """Remove every subscription this module made."""
        ...

    def publish(self, event_type: str, data: Any = None) -> None:
        """Send an event to every subscriber. Thread-safe. Raises ValueError for an invalid event
        type or an event over the bus's `max_message_size_mb` (nothing is sent), and TypeError
        when `data` is not msgpack-serialisable."""
        ...

    def ready(self) -> None:
        """Say that the module is ready, for a module with `ready: manual` in modules.yaml: it
        counts as running from then on, not when `initialize()` returns (still within its
        `start_timeout`). Thread-safe; does nothing without `ready: manual` or when said before."""
        ...
