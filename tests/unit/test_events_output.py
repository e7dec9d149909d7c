"""What `orchestrator events` prints of an event a publisher made hostile: one line, valid JSON,
no terminal escape obeyed; and options that take seconds refuse NaN."""

from __future__ import annotations

import json

import click
import pytest

from module_sdk.event import Event
from orchestrator.cli.common import Seconds
from orchestrator.cli.events import _format

FORGED = "billing  {}\n12:00:00.000  payments.refund  billing  {}\x1b]0;title\x07"


def test_a_forged_source_is_shown_not_obeyed() -> None:
    event = Event(type="a.b", data=1, source=FORGED, id="1-x-1\x1b[2J", time=1.0)
    for as_json in (False, True):
        line = _format(event, as_json)
        assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "\\n12:00:00.000" in _format(event, False)


@pytest.mark.parametrize(
    "data",
    [
        {b"k": 1},
        {"n": float("nan"), "i": float("-inf")},
        {(1, 2): "tuple key"},
        b"\x00\xff",
    ],
)
def test_any_data_prints_as_valid_json(data: object) -> None:
    event = Event(type="a.b", data=data, source="m", id="1-x-1", time=1.0)
    json.loads(_format(event, True))  # raised TypeError (bytes keys), printed NaN
    json.loads(_format(event, False).split("  ", 3)[3])


def test_data_nested_deeper_than_shown_is_cut_not_a_recursion_error() -> None:
    deep: object = 1
    for _ in range(5000):
        deep = [deep]
    event = Event(type="a.b", data=deep, source="m", id="1-x-1", time=float("nan"))
    assert '"..."' in _format(event, True)


def test_seconds_refuse_nan() -> None:
    with pytest.raises(click.BadParameter, match="nan"):
        Seconds(min=0, max=10).convert("nan", None, None)
    assert Seconds(min=0, max=10).convert("2.5", None, None) == 2.5


def test_a_modules_output_is_shown_on_a_terminal_not_obeyed() -> None:
    """`status NAME` prints the end of the module's log, `logs` on a terminal all of it: an
    escape sequence in it cleared the screen or set the title, a CR overwrote a line."""
    from orchestrator.terminal import terminal_safe

    said = "ok\x1b]0;PWN\x07\x1b[2J\rforged\tstill\x9b"
    assert terminal_safe(said) == "ok\\x1b]0;PWN\\x07\\x1b[2J\\rforged\tstill\\x9b"
    assert terminal_safe("two\nlines") == "two\nlines"


def test_bidirectional_controls_are_shown_not_obeyed() -> None:
    """A terminal that does BiDi reorders the text after a right-to-left override:
    `file_\\u202eexe.txt` read as `file_txt.exe`."""
    from orchestrator.terminal import terminal_safe

    for char in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
        assert terminal_safe(f"a{char}b") == f"a\\u{ord(char):04x}b"
    assert terminal_safe("file_\u202eexe.txt") == "file_\\u202eexe.txt"
    assert terminal_safe("שלום, naïve 😀\u200d") == "שלום, naïve 😀\u200d"  # text, and a joiner
