"""What `@retry` and `@circuit_breaker` share: their defaults and their counts.

The defaults come from `main.yaml`'s `error_handling:` section, which the supervisor sends with
the spec (the shim calls `configure`); a decorator without an explicit value reads them at each
call, so a module's import order does not matter. The counts (`retries`, `breaker_opens`) travel
to the supervisor with the heartbeats and show in `orchestrator status --json` and the metrics.

This file imports neither tenacity nor pybreaker: the shim imports it in every module process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from module_sdk.protocol import ENV_MODULE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Defaults:
    """The values a decorator uses for what it is not given (`error_handling:`'s defaults)."""

    retry_max_attempts: int = 3
    retry_wait_min: float = 1.0  # seconds before the first retry; doubles each time
    retry_wait_max: float = 10.0  # the longest wait between attempts
    circuit_breaker_fail_max: int = 5
    circuit_breaker_reset_timeout: float = 60.0


_lock = threading.Lock()
_defaults = Defaults()
_counts = {"retries": 0, "breaker_opens": 0}
_module = os.environ.get(ENV_MODULE, "")


def defaults() -> Defaults:
    """The defaults in force now."""
    return _defaults


def configure(
    settings: Mapping[str, Any] | None = None, *, module: str | None = None, **overrides: Any
) -> Defaults:
    """Set the defaults from `settings` (the spec's `error_handling`: unknown keys and values of
    the wrong type are ignored) and then `overrides` (keyword names of `Defaults`, checked: a
    TypeError or ValueError for a bad one); `module` names the module in log lines (the shim
    gives it: a process forked from a warm template imported this file before it had a name).
    Returns the defaults in force before."""
    global _defaults, _module
    if module is not None:
        _module = module
    known = {field.name for field in dataclasses.fields(Defaults)}
    given = settings.items() if isinstance(settings, Mapping) else ()
    changes: dict[str, Any] = {
        key: value
        for key, value in given
        if key in known and isinstance(value, int | float) and not isinstance(value, bool)
    }
    base = dataclasses.replace(_defaults, **changes)
    try:
        _check(base)
    except ValueError as exc:  # the supervisor validated them: this is no config of ours
        log.warning("error_handling defaults ignored: %s", exc)
        base = _defaults
    for key in overrides:
        if key not in known:
            raise TypeError(f"configure(): unknown setting {key!r}")
    updated = dataclasses.replace(base, **overrides)
    _check(updated)
    with _lock:
        before, _defaults = _defaults, updated
    return before


def _check(values: Defaults) -> None:
    if values.retry_max_attempts < 1 or values.circuit_breaker_fail_max < 1:
        raise ValueError("retry_max_attempts and circuit_breaker_fail_max must be at least 1")
    if not 0 <= values.retry_wait_min <= values.retry_wait_max:
        raise ValueError("expected 0 <= retry_wait_min <= retry_wait_max")
    if values.circuit_breaker_reset_timeout < 0:
        raise ValueError("circuit_breaker_reset_timeout must be at least 0")


@contextlib.contextmanager
def no_backoff() -> Iterator[None]:
    """Within the block, `@retry` retries at once (unless given waits of its own): for tests."""
    before = configure(retry_wait_min=0.0, retry_wait_max=0.0)
    try:
        yield
    finally:
        configure(**dataclasses.asdict(before))


def module_name() -> str:
    """The module this process runs (as the supervisor named it), for log lines."""
    return _module or "module"


def count(key: str) -> None:
    """Add one to `retries` or `breaker_opens`."""
    with _lock:
        _counts[key] += 1


def counts() -> dict[str, int]:
    """`{"retries": n, "breaker_opens": n}` since the process started (or `reset_counts`)."""
    with _lock:
        return dict(_counts)


def reset_counts() -> None:
    """Start the counts from 0 again (for tests)."""
    with _lock:
        for key in _counts:
            _counts[key] = 0
