"""Shared test helpers: `wait_until` polls a condition instead of sleeping a guessed time."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

from module_sdk import Event

T = TypeVar("T")

POLL_INTERVAL = 0.005


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    what: str = "condition",
    details: Callable[[], str] | None = None,
) -> T:
    """Call `predicate` until it returns a truthy value and return that value; fail the test with
    `what`, the last value seen and `details()` if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = ""
            if details is not None:
                try:
                    extra = f"\n{details()}"
                except Exception as exc:
                    extra = f"\n(details() raised {type(exc).__name__}: {exc})"
            pytest.fail(
                f"timed out after {timeout:g}s waiting for {what}; last value: {value!r}{extra}"
            )
        time.sleep(POLL_INTERVAL)


class Recorder:
    """A callback that records the events it gets."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def got(self, event_type: str) -> bool:
        return event_type in self.types


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (the OS picks them; a tiny window remains until we bind)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_secret(length: int, alphabet: str = "Kq7vZ2xW9pLm") -> str:
    """A secret of `length` characters in which no 8-character slice repeats by chance."""
    return "".join(alphabet[(i * 7 + i // len(alphabet)) % len(alphabet)] for i in range(length))


def leaks(secret: str, text: str) -> list[str]:
    """The secret, or any 8-character slice of it, found in `text`: as it is, or as escaping or
    joining lines would have shown it."""
    found = []
    for form in {secret, repr(secret)[1:-1], " ".join(secret.splitlines())}:
        if form in text:
            return [form]
        found += [form[i : i + 8] for i in range(len(form) - 7) if form[i : i + 8] in text]
    return found
