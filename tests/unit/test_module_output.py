"""A module's output, read from a real pipe a chunk at a time: whole lines in order whatever the
chunks, each stamped (text) or wrapped (JSON) as a line of its own, secrets scrubbed."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from module_sdk.logformat import json_head, json_line, json_string
from orchestrator.config import LoggingSection, Redactor
from orchestrator.output import READ_SIZE, ModuleLog, OutputReader

SECRET = "hunter2-but-longer"
_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_STAMP_LENGTH = len("2026-12-07 10:00:00,123 ")


class Pipe:
    """A module's output pipe: the test writes, the reader reads (one chunk per `read`)."""

    def __init__(self, log: ModuleLog) -> None:
        read_fd, self.write_fd = os.pipe()
        self.reader = OutputReader(os.fdopen(read_fd, "rb", buffering=0), log)

    def feed(self, data: bytes) -> None:
        for start in range(0, len(data), 4096):  # in pieces, each read at once
            os.write(self.write_fd, data[start : start + 4096])
            while (got := self.reader.read()) == READ_SIZE:
                pass
            assert got is not None

    def end(self) -> None:
        os.close(self.write_fd)
        while self.reader.read() is not None:
            pass


@pytest.fixture(params=["text", "json"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModuleLog]:
    settings = LoggingSection(directory=tmp_path, format=request.param)
    module_log = ModuleLog("m", settings, Redactor((SECRET,)), echo=False, clock=lambda: 1e9)
    yield module_log
    module_log.close()


def _messages(log: ModuleLog) -> list[str]:
    """What the module wrote, line by line, as the log shows it without stamp or wrapping."""
    lines = log.path.read_text().splitlines()
    if log.format == "json":
        return [json.loads(line)["message"] for line in lines]
    assert all(_STAMP.match(line) for line in lines), lines[:3]
    return [_STAMP.sub("", line, count=1) for line in lines]


def test_lines_arrive_whole_and_in_order_whatever_the_chunks(log: ModuleLog) -> None:
    pipe = Pipe(log)
    lines = [f"line {n} " + "é" * (n % 7) for n in range(3000)]
    data = "".join(line + "\n" for line in lines).encode()
    for start in range(0, len(data), 977):  # cuts lines and two-byte characters alike
        pipe.feed(data[start : start + 977])
    pipe.end()
    assert _messages(log) == lines


def test_odd_output_becomes_lines_of_its_own(log: ModuleLog) -> None:
    pipe = Pipe(log)
    pipe.feed(b'crlf\r\n\nbad \xff byte\nquote " and \\ and \x01\n')
    pipe.feed(b"x" * 70_000)  # a line longer than 64 KiB is written in pieces
    pipe.feed(b"\nno newline at the end")
    pipe.end()
    messages = _messages(log)
    assert messages[:4] == ["crlf", "", "bad \ufffd byte", 'quote " and \\ and \x01']
    assert "".join(messages[4:-1]) == "x" * 70_000
    assert messages[-1] == "no newline at the end"


def test_secrets_are_scrubbed_before_the_line_is_wrapped(log: ModuleLog) -> None:
    pipe = Pipe(log)
    pipe.feed(f'token {SECRET}\n"{SECRET}" quoted\n'.encode())
    pipe.end()
    assert SECRET not in log.path.read_text()
    assert _messages(log) == ["token ***", '"***" quoted']


def test_a_secret_is_scrubbed_where_a_long_line_is_cut(log: ModuleLog) -> None:
    """A line longer than 64 KiB is written in pieces, scrubbed one by one: no cut may leave
    part of a secret in each piece (there is one at every offset, so some cut falls in one)."""
    pipe = Pipe(log)
    pipe.feed(" ".join([SECRET] * 15_000).encode() + b"\n")
    pipe.end()
    text = log.path.read_text()
    slices = {SECRET[i : i + 6] for i in range(len(SECRET) - 5)}
    assert not [part for part in slices if part in text], text[:200]
    messages = _messages(log)
    assert len(messages) > 2 and "".join(messages) == " ".join(["***"] * 15_000)


def test_a_character_is_never_cut_where_a_long_line_is(log: ModuleLog) -> None:
    pipe = Pipe(log)
    pipe.feed("€".encode() * 70_000 + b"\n")  # 3 bytes a character: a cut falls in one
    pipe.end()
    assert "".join(_messages(log)) == "€" * 70_000


def test_lines_the_modules_logging_wrote_pass_as_they_are(tmp_path: Path) -> None:
    for log_format, own in (
        ("text", "2026-12-07 10:00:00,123 INFO m.db: stamped by the SDK"),
        ("json", json_line(1e9, level="WARNING", module="m", logger="m.db", message="sdk")),
    ):
        settings = LoggingSection(directory=tmp_path / log_format, format=log_format)
        module_log = ModuleLog("m", settings, Redactor(()), echo=False, clock=lambda: 1e9)
        module_log.write_lines(f"{own}\nprinted\n")
        module_log.close()
        first, second = module_log.path.read_text().splitlines()
        assert first == own
        assert second != "printed" and second.endswith("printed" if log_format == "text" else "}")


@pytest.mark.parametrize(
    "printed",
    [
        ["plain", "", "another"],  # no line starts with a digit: the stamps go in at once
        ["", "12 apples", "2026-12-07 not a stamp", "x", "9"],  # digits: line by line
        ["2026-12-07 10:00:00,123 INFO m: the SDK's", "printed", "", "2026-12-07 10:00:01 too"],
    ],
)
def test_each_printed_line_gets_the_time_and_only_those(tmp_path: Path, printed: list[str]) -> None:
    module_log = ModuleLog("m", LoggingSection(directory=tmp_path), Redactor(()), echo=False)
    module_log.write_lines("".join(f"{line}\n" for line in printed))
    module_log.close()
    written = module_log.path.read_text().split("\n")
    assert written.pop() == ""  # the text ends with a newline, and holds one line per line
    assert len(written) == len(printed)
    for line, was in zip(written, printed, strict=True):
        own = re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", was) is not None
        assert line == was if own else (_STAMP.match(line) and line[_STAMP_LENGTH:] == was)


def test_a_printed_line_in_json_is_what_json_line_makes() -> None:
    for message in ["plain", 'a "quote"', "back\\slash", "tab\there", "\x00\x1f", "é€😀", ""]:
        head = json_head(1.5e9, level="INFO", module="m-1", logger="print")
        assert head + json_string(message) + "}" == json_line(
            1.5e9, level="INFO", module="m-1", logger="print", message=message
        )


def test_the_echo_tags_each_line_with_the_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module_log = ModuleLog("m", LoggingSection(directory=tmp_path), Redactor(()), echo=True)
    module_log.write_lines("one\ntwo\n")
    module_log.close()
    echoed = capsys.readouterr().err.splitlines()
    assert [_STAMP.sub("", line.removeprefix("[m] ")) for line in echoed] == ["one", "two"]
    assert all(line.startswith("[m] ") for line in echoed)


def test_the_echo_to_a_terminal_shows_escapes_rather_than_obeying_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `logs` does: on a terminal, a module cannot set its title or colours."""
    controller, terminal_fd = os.openpty()
    try:
        with os.fdopen(terminal_fd, "w", closefd=False) as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            module_log = ModuleLog("m", LoggingSection(directory=tmp_path), Redactor(()), echo=True)
            module_log.write_lines("title \x1b]0;PWNED\x07 red \x1b[31m bell \x07\n")
            module_log.close()
        echoed = os.read(controller, 65536).decode()
    finally:
        os.close(terminal_fd)
        os.close(controller)
    assert "\x1b" not in echoed and "\x07" not in echoed, repr(echoed)
    assert "title \\x1b]0;PWNED\\x07 red \\x1b[31m bell \\x07" in echoed, repr(echoed)
    assert "\x1b]0;PWNED" in module_log.path.read_text()  # the log keeps what the module wrote


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_holding_bytes_that_are_not_utf8_is_scrubbed(
    tmp_path: Path, log_format: str
) -> None:
    # os.environ keeps such bytes as surrogates; the output, decoded with "replace", never
    # matched them, and the secret was written out whole.
    raw = b"tok\xffSECRETVALUE"
    secret = raw.decode("utf-8", "surrogateescape")
    settings = LoggingSection(directory=tmp_path, format=log_format)
    module_log = ModuleLog("m", settings, Redactor((secret,)), echo=False, clock=lambda: 1e9)
    pipe = Pipe(module_log)
    pipe.feed(b"before " + raw + b" after \xfe\n")
    pipe.end()
    module_log.close()
    data = module_log.path.read_bytes()
    assert b"SECRETVALUE" not in data, data
    assert _messages(module_log) == ["before *** after \ufffd"]
