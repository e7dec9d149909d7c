"""Tests of module_sdk.event: event-type names and subscription patterns."""

from __future__ import annotations

import pytest

from module_sdk.event import MAX_EVENT_TYPE_LENGTH, Pattern, validate_event_type

LONGEST = "a." + "b" * (MAX_EVENT_TYPE_LENGTH - 2)  # exactly 255 characters


@pytest.mark.parametrize(
    "event_type",
    ["test.ping", "a.b.c", "my_mod.do-thing", "mod1.x", "_private.event", "A.B", LONGEST],
)
def test_valid_event_types_are_returned_unchanged(event_type: str) -> None:
    assert validate_event_type(event_type) == event_type


@pytest.mark.parametrize(
    "event_type",
    [
        "ping",
        ".ping",
        "test.",
        "test..ping",
        "Test ping",
        "test.ping ",
        "test.ping\n",
        "test.*",
        "*",
        "-mod.ping",
        "test.-ping",
        "tést.ping",
        "",
        LONGEST + "b",
        "a." + "b" * 1000,
    ],
)
def test_invalid_event_types_raise_naming_the_value(event_type: str) -> None:
    with pytest.raises(ValueError, match="invalid event type") as info:
        validate_event_type(event_type)
    assert repr(event_type) in str(info.value)


def test_longest_event_type_is_255_characters() -> None:
    assert len(LONGEST) == 255 == MAX_EVENT_TYPE_LENGTH
    assert validate_event_type(LONGEST) == LONGEST
    with pytest.raises(ValueError):
        validate_event_type(LONGEST + "x")


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(3, "int"), (None, "NoneType"), (b"test.ping", "bytes"), (["test.ping"], "list")],
)
def test_non_string_event_types_raise_naming_the_type(value: object, type_name: str) -> None:
    with pytest.raises(ValueError, match="must be a string") as info:
        validate_event_type(value)
    assert type_name in str(info.value)


@pytest.mark.parametrize(
    ("text", "zmq_prefix", "exact"),
    [
        ("test.ping", b"test.ping", "test.ping"),
        ("a.b.c", b"a.b.c", "a.b.c"),
        ("test.*", b"test.", None),
        ("a.b.*", b"a.b.", None),
        ("*", b"", None),
    ],
)
def test_pattern_parse(text: str, zmq_prefix: bytes, exact: str | None) -> None:
    pattern = Pattern.parse(text)
    assert pattern == Pattern(text, zmq_prefix, exact)


@pytest.mark.parametrize(
    "text",
    ["test*", "*.ping", "test.*.x", "", 3, None, "ping", "test.**", "**", "test.", ".*", "te st.*"],
)
def test_invalid_patterns_raise_naming_the_value(text: object) -> None:
    with pytest.raises(ValueError, match="invalid subscription pattern") as info:
        Pattern.parse(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("test.ping", "test.ping", True),
        ("test.ping", "test.pingpong", False),
        ("test.ping", "test.ping.sub", False),
        ("test.ping", "test.pin", False),
        ("test.ping", "other.ping", False),
        ("test.*", "test.ping", True),
        ("test.*", "test.a.b", True),
        ("test.*", "testing.x", False),
        ("test.*", "other.test", False),
        ("a.b.*", "a.b.c", True),
        ("a.b.*", "a.bc.d", False),
        ("a.b.*", "a.c.d", False),
        ("*", "test.ping", True),
        ("*", "x.y", True),
        ("*", "a.b.c.d", True),
    ],
)
def test_pattern_matches(pattern: str, event_type: str, expected: bool) -> None:
    assert Pattern.parse(pattern).matches(event_type) is expected
