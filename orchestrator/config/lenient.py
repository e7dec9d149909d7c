"""What a command can still read of a config that does not load (a module directory moved away,
a typo in modules.yaml): the logs directory and the modules listed, each read on its own and
never raising. For what only looks (`logs`, who holds the project, a hint), never for what starts
a process: that takes `load_config`'s validated config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.interpolate import Substitution, read_variables
from orchestrator.config.loader import ENV_FILE, MAIN_FILE, MODULES_FILE, read_yaml
from orchestrator.config.model import LoggingSection
from orchestrator.record import record


@record
class ListedModule:
    """One entry of modules.yaml, as far as it can be read."""

    name: str
    enabled: bool  # False only if it says `enabled: false`
    instances: bool  # it says `instances:` (runs as NAME#1, NAME#2, ...)


def logs_directory(config_dir: Path) -> Path:
    """`logging.directory` as `load_config` resolves it (against the project root, `${VAR}`s
    filled in), or the default `logs` where main.yaml or that value cannot be read."""
    root = config_dir.resolve()
    directory = LoggingSection.directory
    section = _read(root, MAIN_FILE).get("logging")
    value = section.get("directory") if isinstance(section, dict) else None
    filled = _filled(root, value) if isinstance(value, str) else None
    if filled:
        directory = Path(filled)
    try:
        return (root.parent / directory).resolve()
    except (OSError, RuntimeError):  # a symlink loop, say: as written, then
        return root.parent / directory


def listed_modules(config_dir: Path) -> list[ListedModule]:
    """The entries of modules.yaml that have a name (a string), in file order; none where the
    file cannot be read."""
    root = config_dir.resolve()
    entries = _read(root, MODULES_FILE).get("modules")
    listed = []
    for entry in entries if isinstance(entries, list) else []:
        name = _filled(root, entry.get("name")) if isinstance(entry, dict) else None
        if name and isinstance(entry, dict):
            enabled = entry.get("enabled") is not False
            listed.append(ListedModule(name, enabled, "instances" in entry))
    return listed


def _read(root: Path, filename: str) -> dict[str, Any]:
    try:
        return read_yaml(root / filename, filename, missing_ok=True)
    except ConfigError:
        return {}


def _filled(root: Path, value: Any) -> str | None:
    """`value` with its `${VAR}`s filled in as `load_config` fills them; None if it is not a
    string or a reference cannot be filled."""
    if not isinstance(value, str):
        return None
    if "${" not in value:
        return value
    try:
        variables = read_variables(root / ENV_FILE, ENV_FILE)
        return str(Substitution(variables, ENV_FILE).fill(value, ENV_FILE))
    except ConfigError:
        return None
