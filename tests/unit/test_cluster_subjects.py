"""Event types and export patterns as NATS subjects."""

from __future__ import annotations

import pytest

from orchestrator.cluster.subjects import event_subject, pattern_subject, sync_subject, type_of


def test_event_and_sync_subjects() -> None:
    assert event_subject("prod", "orders.created") == "prod.ev.orders.created"
    assert sync_subject("prod", "orders.created") == "prod.ev.orders.created.~sync"


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        ("*", "prod.ev.>"),
        ("x.*", "prod.ev.x.>"),
        ("orders.eu.*", "prod.ev.orders.eu.>"),
        ("orders.created", "prod.ev.orders.created"),
    ],
)
def test_pattern_subjects(pattern: str, subject: str) -> None:
    assert pattern_subject("prod", pattern) == subject


def test_an_invalid_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid subscription pattern"):
        pattern_subject("prod", "x y")


@pytest.mark.parametrize(
    ("subject", "parsed"),
    [
        ("prod.ev.orders.created", ("ev", "orders.created")),
        ("prod.ev.a.b.~sync", ("sync", "a.b")),
        ("prod.ev.~sync", None),
        ("prod.sync.a.b", None),
        ("other.ev.a.b", None),
        ("prod.what.a.b", None),
        ("prod.ev", None),
    ],
)
def test_type_of(subject: str, parsed: tuple[str, str] | None) -> None:
    assert type_of("prod", subject) == parsed
