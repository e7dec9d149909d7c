"""pytest fixtures for testing a module, registered through the `pytest11` entry point.

- `event_bus`: a fresh `module_sdk.testing.InProcessBus` (source `test`).
- `module_loader`: `module_sdk.testing.load_module`; after the test, every module it loaded whose
  `initialize()` was called and whose `shutdown()` was not gets `shutdown()` called, newest first.
  A `shutdown()` that raises then is reported as a `ModuleShutdownWarning`, not a test error.
- `no_backoff`: `@retry` retries at once during the test, and the `retries` and `breaker_opens`
  counts (`module_sdk.testing.resilience_counts()`) start from 0.
- `module_process`: `start(path, config=None, *, name=None, settings=None)` runs a module in a
  real child process under a real supervisor and broker (`module_sdk.harness.RunningModule`:
  `publish`, `events`, `wait_for`, `wait_for_log`, `status`, `log`); everything is stopped after the test.

This is the only part of `module_sdk` that imports pytest.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from module_sdk import resilience
from module_sdk.harness import RunningModule
from module_sdk.testing import InProcessBus, ModuleLoader, load_module

__all__ = ["ModuleShutdownWarning", "event_bus", "module_loader", "module_process", "no_backoff"]


class ModuleShutdownWarning(UserWarning):
    """A module's `shutdown()` raised when the `module_loader` fixture called it after the test."""


class _Tracked:
    """One loaded module: whether its `initialize()` ran, and whether `shutdown()` has since."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.needs_shutdown = False
        self.shutdown: Callable[[], object] = module.shutdown
        module.__dict__["initialize"] = self._wrap(module.initialize, initialized=True)
        module.__dict__["shutdown"] = self._wrap(module.shutdown, initialized=False)

    def _wrap(self, function: Callable[..., Any], *, initialized: bool) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # Set before the call: a shutdown() that raised in the test is not retried, and an
            # initialize() that raised half-way may have started something to stop.
            self.needs_shutdown = initialized
            return function(*args, **kwargs)

        return wrapper


@pytest.fixture
def event_bus() -> InProcessBus:
    """A fresh in-process event bus; see `module_sdk.testing.InProcessBus`."""
    return InProcessBus()


@pytest.fixture
def no_backoff() -> Iterator[None]:
    """`@retry` without waits for the test, and the retry and breaker counts from 0."""
    resilience.reset_counts()
    with resilience.no_backoff():
        yield
    resilience.reset_counts()


@pytest.fixture
def module_loader() -> Iterator[ModuleLoader]:
    """`load_module(path, name=None)`, which shuts the modules it loaded down after the test."""
    loaded: list[_Tracked] = []

    def load(path: str | os.PathLike[str], name: str | None = None) -> ModuleType:
        module = load_module(path, name)
        loaded.append(_Tracked(module))
        return module

    yield load

    for tracked in reversed(loaded):
        if not tracked.needs_shutdown:
            continue
        tracked.needs_shutdown = False
        try:
            tracked.shutdown()
        except Exception as exc:
            warnings.warn(
                f"shutdown() of module {tracked.module.__name__} raised after the test: "
                f"{type(exc).__name__}: {exc}",
                ModuleShutdownWarning,
                stacklevel=1,
            )


@pytest.fixture
def module_process() -> Iterator[Callable[..., RunningModule]]:
    """Start modules in real child processes (`RunningModule.start`); all stop after the test."""
    started: list[RunningModule] = []

    def start(
        path: str | os.PathLike[str], config: dict[str, Any] | None = None, **options: Any
    ) -> RunningModule:
        running = RunningModule.start(path, config, **options)
        started.append(running)
        return running

    yield start

    for running in reversed(started):
        running.stop()
