"""Tests of module_sdk.event: event-type names and subscription patterns."""

from __future__ import annotations

import pytest

from module_sdk.event import MAX_EVENT_TYPE_LENGTH, Pattern, shown, validate_event_type

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
        "a.b\x00",
        "\x00probe.x",
        "a.b\x7f",
    ],
)
def test_invalid_event_types_raise_naming_the_value(event_type: str) -> None:
    with pytest.raises(ValueError, match="invalid event type") as info:
        validate_event_type(event_type)
    assert repr(event_type) in str(info.value)


@pytest.mark.parametrize("length", [MAX_EVENT_TYPE_LENGTH + 1, 306, 1002, 200_002])
def test_long_event_types_raise_naming_the_limit_and_quoting_a_short_part(length: int) -> None:
    event_type = "a." + "b" * (length - 2)
    with pytest.raises(ValueError, match="invalid event type") as info:
        validate_event_type(event_type)
    message = str(info.value)
    assert f"over the limit of {MAX_EVENT_TYPE_LENGTH} characters" in message
    assert f"({length} characters)" in message and "'a.bbb" in message
    assert len(message) < 200


def test_shown_cuts_long_values_only() -> None:
    assert shown("test.ping") == "'test.ping'"
    assert shown("x" * 300) == "'" + "x" * 59 + "... (300 characters)"
    assert shown([1] * 100).endswith(f"... ({len(repr([1] * 100))} as text)")


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
    "text",
    [
        "a." + "b" * (MAX_EVENT_TYPE_LENGTH - 1),
        "a." + "b" * (MAX_EVENT_TYPE_LENGTH - 3) + ".*",
        "a." + "b" * 200_000,
        "a." + "b" * 130_000 + ".*",
    ],
    ids=["exact-256", "prefix-256", "exact-200k", "prefix-130k"],
)
def test_patterns_longer_than_an_event_type_raise_naming_the_limit(text: str) -> None:
    """libzmq's subscription trie is walked recursively: a 200,000-character subscription
    crashed the broker and every module's PUB socket."""
    assert len(text) > MAX_EVENT_TYPE_LENGTH
    with pytest.raises(ValueError, match="invalid subscription pattern") as info:
        Pattern.parse(text)
    message = str(info.value)
    assert f"over the limit of {MAX_EVENT_TYPE_LENGTH} characters" in message
    assert f"({len(text)} characters)" in message and len(message) < 200


def test_the_longest_patterns_are_accepted() -> None:
    exact = "a." + "b" * (MAX_EVENT_TYPE_LENGTH - 2)
    prefix = "a." + "b" * (MAX_EVENT_TYPE_LENGTH - 4) + ".*"
    assert Pattern.parse(exact).zmq_prefix == exact.encode()
    assert Pattern.parse(prefix).zmq_prefix == prefix[:-1].encode()


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
