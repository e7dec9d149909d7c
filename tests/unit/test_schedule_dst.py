"""Due times across daylight saving changes, as pure functions: the day the clocks go back runs
a fixed wall time once (classic cron), while hourly and every-N-seconds schedules run through the
repeated hour; the day they go forward runs a time that does not exist at the first one after."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator.config import ModuleSpec
from orchestrator.scheduler import fixed_wall_time, machine_zone, next_due


def _walk(cron: str, zone: str | None, start: str, count: int) -> list[str]:
    """`count` due times from `start` (ISO, with its offset), each after the previous one, as
    the scheduler's tick asks for them: ISO wall times in the zone, with their offsets."""
    from zoneinfo import ZoneInfo

    spec = ModuleSpec(name="job", path=Path("job.py"), schedule=cron, timezone=zone)
    after, seen = datetime.fromisoformat(start).timestamp(), []
    for _ in range(count):
        after = next_due(spec, after)
        local = datetime.fromtimestamp(after, ZoneInfo(zone)) if zone else None
        local = local or datetime.fromtimestamp(after).astimezone()  # the machine's zone
        seen.append(local.isoformat())
    return seen


PARIS = "Europe/Paris"  # 2025-10-26 03:00+02:00 -> 02:00+01:00; 2025-03-30 02:00+01:00 -> 03:00


@pytest.mark.parametrize(
    ("cron", "zone", "start", "expected"),
    [
        (  # a fixed time once, not again an hour later (croniter names 02:30+01:00 too)
            "30 2 * * *",
            PARIS,
            "2025-10-25T12:00:00+02:00",
            ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"],
        ),
        (  # with seconds
            "59 2 * * * 59",
            PARIS,
            "2025-10-26T00:00:00+02:00",
            ["2025-10-26T02:59:59+02:00", "2025-10-27T02:59:59+01:00"],
        ),
        (  # a list of fixed times: each once
            "0,30 2 * * *",
            PARIS,
            "2025-10-26T00:00:00+02:00",
            ["2025-10-26T02:00:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-27T02:00:00+01:00"],
        ),
        (  # the hour after the repeat is not lost with it
            "30 2,3 * * *",
            PARIS,
            "2025-10-26T00:00:00+02:00",
            ["2025-10-26T02:30:00+02:00", "2025-10-26T03:30:00+01:00", "2025-10-27T02:30:00+01:00"],
        ),
        (  # ... nor a time right at its end
            "0 3 * * *",
            PARIS,
            "2025-10-26T02:10:00+01:00",
            ["2025-10-26T03:00:00+01:00"],
        ),
        (  # started during the repeat: its first occurrence has passed, none is left today
            "30 2 * * *",
            PARIS,
            "2025-10-26T02:10:00+01:00",
            ["2025-10-27T02:30:00+01:00"],
        ),
        (  # another zone, another repeated hour
            "30 1 * * *",
            "America/New_York",
            "2025-11-01T12:00:00-04:00",
            ["2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"],
        ),
        (  # hourly: the repeated hour runs again
            "0 * * * *",
            PARIS,
            "2025-10-26T01:30:00+02:00",
            [
                "2025-10-26T02:00:00+02:00",
                "2025-10-26T02:00:00+01:00",
                "2025-10-26T03:00:00+01:00",
            ],
        ),
        (  # a step in the minutes is not a fixed time either (Vixie cron: a leading *)
            "*/30 2 * * *",
            PARIS,
            "2025-10-26T01:50:00+02:00",
            [
                "2025-10-26T02:00:00+02:00",
                "2025-10-26T02:30:00+02:00",
                "2025-10-26T02:00:00+01:00",
                "2025-10-26T02:30:00+01:00",
                "2025-10-27T02:00:00+01:00",
            ],
        ),
        (  # every 20 seconds, straight through
            "* * * * * */20",
            PARIS,
            "2025-10-26T02:59:30+02:00",
            ["2025-10-26T02:59:40+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T02:00:20+01:00"],
        ),
        (  # spring forward: 02:30 does not exist; it runs at 03:00, then at 02:30 again
            "30 2 * * *",
            PARIS,
            "2025-03-29T12:00:00+01:00",
            ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"],
        ),
    ],
)
def test_due_times_across_a_change_of_offset(
    cron: str, zone: str, start: str, expected: list[str]
) -> None:
    assert _walk(cron, zone, start, len(expected)) == expected


@pytest.fixture
def paris_machine() -> Iterator[None]:
    """The machine's own zone is Paris (a schedule without `timezone:` uses it)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = PARIS
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


@pytest.mark.usefixtures("paris_machine")
def test_without_a_timezone_due_times_follow_the_machines_zone_rules() -> None:
    """They were computed in the machine's offset of the moment: the day after the clocks went
    back, 30 2 * * * ran at 01:30 and again at 02:30."""
    assert _walk("30 2 * * *", None, "2025-10-25T12:00:00+02:00", 2) == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-27T02:30:00+01:00",
    ]
    assert _walk("0 * * * *", None, "2025-10-26T01:30:00+02:00", 2) == [
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
    ]


@pytest.mark.parametrize(
    ("cron", "fixed"),
    [
        ("30 2 * * *", True),
        ("0,30 1-3 * * *", True),
        ("0 0 * * * 30", True),
        ("* 2 * * *", False),
        ("*/5 2 * * *", False),
        ("0 * * * *", False),
        ("0 */2 * * *", False),
        ("* * * * * */10", False),
    ],
)
def test_a_fixed_wall_time_has_neither_minute_nor_hour_wildcard(cron: str, fixed: bool) -> None:
    assert fixed_wall_time(cron) is fixed


def test_an_empty_tz_is_utc_as_the_c_library_takes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TZ=` (set, empty) is UTC for time.localtime and the logs: schedules agree, whatever
    /etc/localtime says."""
    monkeypatch.setenv("TZ", "")
    assert machine_zone() is UTC
