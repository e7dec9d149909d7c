"""The keys of a module entry that say how many processes it runs and when: `instances`,
`schedule`, `timezone` and `overlap`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.validate import child, describe, expect_choice, expect_int, expect_str

MAX_INSTANCES = 64
"""Instances of one module at most: each is a process, and a pool larger than this is a typo."""

OVERLAPS = ("skip", "queue", "allow")
RUN_KEYS = ("instances", "schedule", "timezone", "overlap")


def build_run_keys(entry: dict[str, Any], file: str, where: str) -> dict[str, Any]:
    """The `ModuleSpec` fields of `RUN_KEYS` that `entry` sets, checked."""
    fields: dict[str, Any] = {}
    if "instances" in entry:
        at = child(where, "instances")
        fields["instances"] = expect_int(
            entry["instances"], file, at, minimum=1, maximum=MAX_INSTANCES
        )
    if "schedule" in entry:
        fields["schedule"] = cron_expression(entry["schedule"], file, child(where, "schedule"))
        if "instances" in fields:
            raise ConfigError(
                file,
                child(where, "instances"),
                "a scheduled module runs one process: drop instances or schedule",
            )
    for key in ("timezone", "overlap"):
        if key in entry and "schedule" not in fields:
            raise ConfigError(
                file, child(where, key), "applies to a scheduled module only: set schedule too"
            )
    if "timezone" in entry:
        fields["timezone"] = timezone(entry["timezone"], file, child(where, "timezone"))
    if "schedule" in fields:
        _check_comes(fields["schedule"], fields.get("timezone"), file, child(where, "schedule"))
    if "overlap" in entry:
        fields["overlap"] = expect_choice(entry["overlap"], file, child(where, "overlap"), OVERLAPS)
    return fields


def cron_expression(value: Any, file: str, where: str) -> str:
    """A cron expression croniter accepts: 5 fields, or 6 with seconds last."""
    from croniter import croniter  # noqa: PLC0415  (only configs with a schedule need it)

    text = expect_str(value, file, where, allow_empty=False).strip()
    if len(text.split()) not in (5, 6) or not croniter.is_valid(text):
        raise ConfigError(
            file,
            where,
            "expected a cron expression (minute hour day month weekday, and optionally seconds "
            f"as a 6th field), got {describe(value)}",
        )
    fields = text.split()
    if len(fields) == 6 and fields[5] == "*" and fields[0] != "*":
        # Quartz and Spring put the seconds first: `*/10 * * * * *` meant as every 10 s runs
        # every second of every 10th minute here.
        raise ConfigError(
            file,
            where,
            f"{describe(value)} runs every second of the minutes {fields[0]!r} names: with 6"
            f" fields the seconds come last; for every 10 seconds write '* * * * * */10', and"
            " for every second of those minutes write the seconds as 0-59",
        )
    return text


def _check_comes(text: str, zone_name: str | None, file: str, where: str) -> None:
    """Refuse an expression croniter takes but that names no time to come (`0 0 30 2 *`)."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415  (as croniter: only with a schedule)

    from croniter import CroniterError, croniter  # noqa: PLC0415

    zone = ZoneInfo(zone_name) if zone_name else None
    try:
        croniter(text, datetime.fromtimestamp(time.time(), zone).astimezone(zone)).get_next(float)
    except (CroniterError, ValueError, OverflowError):
        raise ConfigError(
            file, where, f"{describe(text)} names no time to come (a 30th of February, say)"
        ) from None


def timezone(value: Any, file: str, where: str) -> str:
    """An IANA time zone name that zoneinfo knows (`Europe/Paris`, `UTC`)."""
    name = expect_str(value, file, where, allow_empty=False)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # noqa: PLC0415  (as croniter above)

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            file,
            where,
            f"expected a time zone name such as 'UTC' or 'Europe/Paris', got {describe(value)}",
        ) from None
    return name
