"""The end of a log as `logs` and `status NAME` show it: lines end at a newline only, so that a
carriage return in a module's line is shown (`\\r` on a terminal) instead of breaking the line."""

from __future__ import annotations

from pathlib import Path

from orchestrator.logtail import last_lines
from orchestrator.terminal import terminal_safe


def test_a_carriage_return_is_part_of_its_line(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_bytes(b"first\nprogress 10%\rprogress 100%\nwindows line\r\nform\x0cfeed\x1cx\n")
    assert last_lines(log, 3) == [
        "progress 10%\rprogress 100%",
        "windows line",
        "form\x0cfeed\x1cx",
    ]
    assert terminal_safe(last_lines(log, 3)[0]) == "progress 10%\\rprogress 100%"


def test_the_last_lines_with_or_without_a_final_newline(tmp_path: Path) -> None:
    log = tmp_path / "m.log"
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(5000)) + b"partial")
    assert last_lines(log, 2) == ["line 4999", "partial"]
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(5000)))
    assert last_lines(log, 2) == ["line 4998", "line 4999"]
    log.write_bytes(b"")
    assert last_lines(log, 3) == []
    assert last_lines(tmp_path / "none.log", 3) == []
