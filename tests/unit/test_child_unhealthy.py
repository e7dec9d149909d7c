"""The supervisor's side of an `unhealthy` message: untrusted, so bounded, scrubbed and typed
before it becomes the lifecycle's `HealthFailed`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from module_sdk import protocol
from orchestrator import lifecycle as lc
from orchestrator.child_channel import ChildChannel
from orchestrator.config import BusSection, Redactor
from orchestrator.states import ExitReason

CHILD = SimpleNamespace(name="child", process=SimpleNamespace(channel_id=b"child:secret"))


class _Manager:
    def __init__(self) -> None:
        self.by_pid = {42: CHILD}
        self.redactor = Redactor({"hunter22secret"})
        self.events: list[tuple[object, lc.Event]] = []

    def handle(self, child: object, event: lc.Event) -> None:
        self.events.append((child, event))


def _channel(manager: _Manager) -> ChildChannel:
    return ChildChannel(
        cast(Any, None),
        cast(Any, manager),
        bus=BusSection(),
        xsub="",
        xpub="",
        curve=None,
        log_level=lambda: "INFO",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("db down", "db down"),
        ("line\none\x1b[2J", "line one [2J"),
        ("password hunter22secret rejected", "password *** rejected"),
        (["not", "a", "string"], "health() failed"),
        (None, "health() failed"),
        ("", "health() failed"),
    ],
)
def test_an_unhealthy_message_becomes_a_bounded_health_failure(
    error: object, expected: str
) -> None:
    manager = _Manager()
    message = {"kind": protocol.UNHEALTHY, "pid": 42, "error": error, "failures": 3}
    _channel(manager).handle(b"child:secret", message)
    assert manager.events == [(CHILD, lc.HealthFailed(ExitReason.UNHEALTHY, expected))]


def test_a_huge_message_is_cut_and_one_from_an_unknown_pid_ignored() -> None:
    manager = _Manager()
    channel = _channel(manager)
    channel.handle(b"child:secret", {"kind": protocol.UNHEALTHY, "pid": 42, "error": "x" * 10**7})
    channel.handle(b"child:secret", {"kind": protocol.UNHEALTHY, "pid": 7, "error": "nobody"})
    channel.handle(b"child:secret", {"kind": protocol.UNHEALTHY, "pid": "42", "error": "a str"})
    [(_, event)] = manager.events
    assert isinstance(event, lc.HealthFailed) and len(event.message) == protocol.MESSAGE_LIMIT


def test_a_message_for_a_process_from_another_routing_id_is_ignored() -> None:
    # Another module (run as another user, say) naming this one's pid: it does not know the
    # secret part of this process's routing id, so it cannot have it restarted as unhealthy.
    manager = _Manager()
    channel = _channel(manager)
    for impostor in (b"child:42", b"anyone", b""):
        channel.handle(impostor, {"kind": protocol.UNHEALTHY, "pid": 42, "error": "spoofed"})
    assert manager.events == []
