"""The broker's `groups {json}` counters line: whole JSON, within the supervisor's line length,
as many groups as fit, and each group encoded once (it runs on the dispatcher thread)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker import GROUPS_PREFIX
from broker.__main__ import MAX_GROUPS_LINE, report_groups
from broker.group_table import GroupTable
from orchestrator.cli.status import _group_lines


def _stats(count: int) -> dict[str, Any]:
    table = GroupTable()
    for n in range(count):
        table.join(b"m%d" % (n // 32), b"group-%d" % n, b"jobs.*", 8, True)
    return {"groups": table.stats(), "members": count // 32, "bad_frames": 3, "refused": 1}


def _report(capsys: pytest.CaptureFixture[str], stats: dict[str, Any]) -> dict[str, Any]:
    report_groups(stats)
    out = capsys.readouterr().out
    assert out.startswith(GROUPS_PREFIX) and out.endswith("\n") and out.count("\n") == 1
    line = out[len(GROUPS_PREFIX) : -1]
    assert len(line) <= MAX_GROUPS_LINE
    parsed: dict[str, Any] = json.loads(line)
    return parsed


@pytest.mark.parametrize("count", [0, 3, 40, 1024])
def test_as_many_groups_as_fit_and_more_counts_the_rest(
    capsys: pytest.CaptureFixture[str], count: int
) -> None:
    stats = _stats(count)
    line = _report(capsys, stats)
    kept = len(line["groups"])
    assert line["groups"] == stats["groups"][:kept]
    assert line["more"] == count - kept
    assert (line["members"], line["bad_frames"], line["refused"]) == (count // 32, 3, 1)
    if kept < count:  # one more would not have fitted
        longer = {**line, "groups": stats["groups"][: kept + 1], "more": count - kept - 1}
        assert len(json.dumps(longer)) > MAX_GROUPS_LINE
    else:
        assert count < 40


def test_each_group_is_encoded_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the whole line again after each group taken off: that was 3 s for 1024 groups."""
    stats = _stats(1024)
    encoded = 0
    dumps = json.dumps

    def counting(value: Any, **kwargs: Any) -> str:
        nonlocal encoded
        text = dumps(value, **kwargs)
        encoded += len(text)
        return text

    monkeypatch.setattr(json, "dumps", counting)
    report_groups(stats)
    monkeypatch.undo()
    capsys.readouterr()
    assert encoded <= 2 * len(json.dumps(stats))


def test_status_shows_dead_events_only_when_a_group_has_some() -> None:
    stats = _stats(2)
    assert not any("dead" in line for line in _group_lines(stats))
    stats["groups"][1]["dead"] = 2
    lines = _group_lines(stats)
    assert "dead" not in lines[0] and lines[1].endswith(", 2 dead"), lines
