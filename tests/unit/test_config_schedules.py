"""The keys of a module entry that say how many processes it runs and when: checked, named."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from orchestrator.config import ConfigError, ModuleSpec, load_config
from orchestrator.reconcile import plan_reload
from orchestrator.scheduler import next_due

ENTRY = "modules:\n  - name: a\n    path: ../mods/a.py\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "config").mkdir()
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "a.py").write_text("")
    (tmp_path / "config" / "main.yaml").write_text("")
    return tmp_path / "config"


def load(config: Path, extra: str) -> ModuleSpec:
    (config / "modules.yaml").write_text(ENTRY + extra)
    return load_config(config).modules[0]


@pytest.mark.parametrize(
    ("extra", "where", "expected"),
    [
        ("    instances: 0\n", "modules[0].instances", "an integer between 1 and 64, got 0"),
        ("    instances: 65\n", "modules[0].instances", "between 1 and 64, got 65"),
        ("    instances: two\n", "modules[0].instances", "'two'"),
        ("    instances: true\n", "modules[0].instances", "true"),
        ("    schedule: every minute\n", "modules[0].schedule", "cron expression"),
        ("    schedule: '61 * * * *'\n", "modules[0].schedule", "'61 * * * *'"),
        ("    schedule: '* * * * * * *'\n", "modules[0].schedule", "cron expression"),
        (  # seconds first, as Quartz and Spring have them: every second of every 10th minute
            "    schedule: '*/10 * * * * *'\n",
            "modules[0].schedule",
            "with 6 fields the seconds come last; for every 10 seconds write '* * * * * */10'",
        ),
        ("    schedule: ''\n", "modules[0].schedule", "non-empty"),
        ("    schedule: 5\n", "modules[0].schedule", "5"),
        (
            "    schedule: '* * * * *'\n    timezone: Mars/Olympus\n",
            "modules[0].timezone",
            "'Mars/Olympus'",
        ),
        ("    schedule: '* * * * *'\n    timezone: ../../etc/passwd\n", "modules[0].timezone", ""),
        ("    schedule: '* * * * *'\n    overlap: sometimes\n", "modules[0].overlap", "skip"),
        ("    timezone: UTC\n", "modules[0].timezone", "set schedule too"),
        ("    overlap: queue\n", "modules[0].overlap", "set schedule too"),
        ("    schedule: '* * * * *'\n    instances: 2\n", "modules[0].instances", "one process"),
        ("    schedule: '0 0 30 2 *'\n", "modules[0].schedule", "names no time to come"),
        ("    schedule: '0 0 31 4 *'\n", "modules[0].schedule", "names no time to come"),
        ("    schedule: '0 0 1 1 1#5'\n    timezone: UTC\n", "modules[0].schedule", "no time"),
    ],
)
def test_a_bad_value_is_named_with_its_field(
    config: Path, extra: str, where: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(config, extra)
    message = str(info.value)
    assert f"modules.yaml: {where}:" in message and expected in message


def test_instances_expand_to_specs_of_their_own(config: Path) -> None:
    spec = load(config, "    instances: 3\n")
    names = [s.name for s in spec.instance_specs()]
    assert names == ["a#1", "a#2", "a#3"]
    assert {s.instance_of for s in spec.instance_specs()} == {"a"}
    assert load(config, "").instance_specs() == (load(config, ""),)


def test_a_reload_adds_or_removes_only_the_instances_whose_count_changed(config: Path) -> None:
    (config / "modules.yaml").write_text(ENTRY + "    instances: 3\n")
    three = load_config(config)
    (config / "modules.yaml").write_text(ENTRY + "    instances: 4\n")
    four = load_config(config)
    plan = plan_reload(three, four)
    assert (plan.start, plan.stop, plan.restart) == (("a#4",), (), {})
    plan = plan_reload(four, three)
    assert (plan.start, plan.stop, plan.restart) == ((), ("a#4",), {})


def test_a_schedule_with_seconds_and_a_time_zone(config: Path) -> None:
    spec = load(config, "    schedule: '0 9 * * *'\n    timezone: Europe/Paris\n")
    assert (spec.schedule, spec.timezone, spec.overlap) == ("0 9 * * *", "Europe/Paris", "skip")
    assert spec.supervision.restart == "never"  # its default when scheduled
    assert (
        load(config, "    schedule: '* * * * *'\n    restart: always\n").supervision.restart
        == "always"
    )
    assert load(config, "").supervision.restart == "on-failure"
    winter = datetime(2026, 1, 1, 12, tzinfo=ZoneInfo("UTC")).timestamp()
    due = datetime.fromtimestamp(next_due(spec, winter), ZoneInfo("Europe/Paris"))
    assert (due.day, due.hour, due.minute) == (2, 9, 0)
    seconds = load(config, "    schedule: '* * * * * */10'\n    overlap: queue\n")
    assert next_due(seconds, 1000.0) == 1010.0 and seconds.overlap == "queue"
    assert next_due(seconds, 1010.0) == 1020.0  # strictly after


def test_every_second_of_some_minutes_is_written_with_its_seconds_spelled_out(config: Path) -> None:
    assert load(config, "    schedule: '*/10 * * * * 0-59'\n").schedule == "*/10 * * * * 0-59"
    assert load(config, "    schedule: '* * * * * *'\n").schedule == "* * * * * *"
