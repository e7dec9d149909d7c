"""The SDK a module imports: the event-bus interface and the `Event` its callbacks receive.

A module is a `.py` file or a package with:

    def initialize(event_bus: EventBus, config: dict[str, Any]) -> None: ...
    def shutdown() -> None: ...
    def get_tests() -> list[str]: ...   # optional

It never imports the supervisor; the supervisor runs it through `python -m module_sdk`.

`retry`, `circuit_breaker`, `CircuitBreaker` and `CircuitOpenError` (see `module_sdk.retrying` and
`module_sdk.breaker`) are imported on first use: tenacity and pybreaker cost a module, and the
supervisor, which imports this package too, nothing until then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from module_sdk.api import EventBus
from module_sdk.event import Event, EventCallback, Pattern, validate_event_type

if TYPE_CHECKING:
    from module_sdk.breaker import CircuitBreaker, CircuitOpenError, circuit_breaker
    from module_sdk.retrying import retry

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "Event",
    "EventBus",
    "EventCallback",
    "Pattern",
    "circuit_breaker",
    "retry",
    "validate_event_type",
]
__version__ = "0.1.0"

_LAZY = {
    "retry": "module_sdk.retrying",
    "circuit_breaker": "module_sdk.breaker",
    "CircuitBreaker": "module_sdk.breaker",
    "CircuitOpenError": "module_sdk.breaker",
}


def __getattr__(name: str) -> Any:
    """The decorators, imported when first asked for (PEP 562)."""
    if name in _LAZY:
        # Not a file beside a module file, named like what they import (module_sdk/loader.py).
        from module_sdk.loader import own_imports  # noqa: PLC0415 (the supervisor needs none)

        with own_imports():
            value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # asked once
        return value
    raise AttributeError(f"module 'module_sdk' has no attribute {name!r}")
