"""`orchestrator publish TYPE JSON`: the data is JSON nested at most 64 deep, refused as a usage
error otherwise, however deep (no traceback from the parser's recursion)."""

from __future__ import annotations

import click
import pytest

from orchestrator.cli.publish import _payload


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_data_nested_64_deep_is_taken() -> None:
    assert _payload(None, None, _nested(64)) is not None  # type: ignore[arg-type]
    assert _payload(None, None, '{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}  # type: ignore[arg-type]
    assert _payload(None, None, "null") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("depth", [65, 600, 100_000])
def test_data_nested_deeper_is_a_usage_error(depth: int) -> None:
    with pytest.raises(click.BadParameter, match="nested more than 64 deep"):
        _payload(None, None, _nested(depth))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("123456789012345678901234567890", "beyond 64 bits"),
        ('"\\ud800"', "lone surrogate"),
        ("NaN", "NaN is not JSON"),
        ('{"a": -Infinity}', "Infinity is not JSON"),
    ],
)
def test_data_no_event_can_carry_is_a_usage_error(text: str, said: str) -> None:
    """Each was a msgpack traceback from the supervisor's answer, exit 1 (or NaN sent on)."""
    with pytest.raises(click.BadParameter, match=said):
        _payload(None, None, text)  # type: ignore[arg-type]


def test_a_number_too_large_for_a_float_is_a_usage_error() -> None:
    with pytest.raises(click.BadParameter, match="too large for a float"):
        _payload(None, None, '{"x": [1e400]}')  # type: ignore[arg-type]
