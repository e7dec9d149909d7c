"""What a command reads of a config that does not load: the logs directory and the modules
listed, each on its own (`logs` is wanted most when the config is broken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_config
from orchestrator.config.lenient import ListedModule, listed_modules, logs_directory


def _config(tmp_path: Path, main: str | None, modules: str | None) -> Path:
    config = tmp_path / "project" / "config"
    config.mkdir(parents=True)
    if main is not None:
        (config / "main.yaml").write_text(main)
    if modules is not None:
        (config / "modules.yaml").write_text(modules)
    return config


BROKEN = """modules:
  - name: api
    path: ../gone
  - name: pool
    path: ../gone
    instances: 3
    enabled: false
  - name: spare
    enabled: false
  - "a string"
  - path: ../nameless
  - name: 7
typo: here
"""


def test_a_config_that_does_not_load_still_names_its_logs_and_modules(tmp_path: Path) -> None:
    config = _config(tmp_path, "logging:\n  directory: journal\n  level: LOUD\n", BROKEN)
    with pytest.raises(ConfigError):
        load_config(config)
    assert logs_directory(config) == tmp_path / "project" / "journal"
    assert listed_modules(config) == [
        ListedModule("api", enabled=True, instances=False),
        ListedModule("pool", enabled=False, instances=True),
        ListedModule("spare", enabled=False, instances=False),
    ]


def test_what_cannot_be_read_is_the_default_or_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, "logging: [\n", "modules: {api: 1}\n")
    assert logs_directory(config) == tmp_path / "project" / "logs"
    assert listed_modules(config) == []
    missing = tmp_path / "nowhere" / "config"
    assert logs_directory(missing) == tmp_path / "nowhere" / "logs"
    assert listed_modules(missing) == []
    config = _config(tmp_path / "b", "logging:\n  directory: ''\n", "- not a mapping\n")
    assert logs_directory(config) == tmp_path / "b" / "project" / "logs"


def test_references_are_filled_as_the_loader_fills_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGS_AT", "/var/log/app")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    main = "logging:\n  directory: ${LOGS_AT}\n"
    config = _config(
        tmp_path, main, "modules:\n  - name: ${NAME:-worker}\n  - name: ${UNSET_HERE}\n"
    )
    assert logs_directory(config) == Path("/var/log/app")
    assert listed_modules(config) == [ListedModule("worker", enabled=True, instances=False)]
    (config / "main.yaml").write_text("logging:\n  directory: ${UNSET_HERE}/x\n")
    assert logs_directory(config) == tmp_path / "project" / "logs"  # the default, as it cannot
