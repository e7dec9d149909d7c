"""`load_config`: reads `main.yaml` and `modules.yaml`, substitutes `${VAR}`s and validates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.cluster import build_cluster
from orchestrator.config.errors import ConfigError
from orchestrator.config.interpolate import Substitution, read_variables
from orchestrator.config.metrics import build_metrics
from orchestrator.config.model import AppConfig
from orchestrator.config.modules import build_modules
from orchestrator.config.redact import MASK, Redactor
from orchestrator.config.sections import (
    build_app,
    build_bus,
    build_error_handling,
    build_logging,
    build_notifications,
    build_resources,
    build_supervision,
)
from orchestrator.config.validate import check_keys, describe, expect_bool
from orchestrator.config.yamlfile import RefusedYAMLError, TextPath, load_yaml, read_text

MAIN_FILE = "main.yaml"
MODULES_FILE = "modules.yaml"
ENV_FILE = ".env"
MAIN_KEYS = (
    "app",
    "resources",
    "logging",
    "error_handling",
    "supervision",
    "bus",
    "notifications",
    "hot_reload",
    "metrics",
    "cluster",
)
MODULES_KEYS = ("modules",)
MODULES_AS_TEXT: tuple[TextPath, ...] = (("modules", None, "umask"), ("modules", None, "env", None))
"""Values of modules.yaml read as written: `umask: 027` is octal 027 as for systemd's UMask=,
not the YAML 1.1 integer 23 (nor `umask: 77` decimal 77, which is octal 115); an `env:` value
is the string written, `MODE: 0644` is '0644', `VER: 1.10` '1.10', `T: 12:30` '12:30' (YAML 1.1
would make them 420, 1.1 and 750)."""
MAIN_SHOWN: tuple[TextPath, ...] = (("app", "name"), ("app", "version"))
MODULES_SHOWN: tuple[TextPath, ...] = (
    ("modules", None, "name"),
    ("modules", None, "path"),
    ("modules", None, "schedule"),
    ("modules", None, "timezone"),
    ("modules", None, "filesystem", None, None),
    ("modules", None, "work_group"),
    ("modules", None, "depends_on", None),
    ("modules", None, "user"),
    ("modules", None, "group"),
)
"""Values shown as written wherever the config is (status, metrics, events): a `${VAR}` there
is filled in, but its value is not a secret, masked elsewhere (`Substitution.fill`'s `shown`)."""
_NO_MODULES_FILE = (
    "file not found; it lists the modules to run (`modules: []` for none; `orchestrator init` "
    "writes a starter project)"
)


def load_config(config_dir: Path) -> AppConfig:
    """Load and validate `config_dir/main.yaml` and `config_dir/modules.yaml`.

    `main.yaml` is optional (every key has a default; a missing file is an empty one);
    `modules.yaml` is required, since without it there is nothing to run, but `modules: []` or an
    empty file is a valid, empty project. `${VAR}` references are filled from the environment, then from
    `config_dir/.env`; the values filled in become `AppConfig.secrets`. Relative paths are resolved:
    `logging.directory` against the project root (`config_dir`'s parent), module paths against
    `config_dir`. Raises `ConfigError` (one line, secrets scrubbed) on the first problem found.
    """
    main_label = str(config_dir / MAIN_FILE)
    modules_label = str(config_dir / MODULES_FILE)
    env_label = str(config_dir / ENV_FILE)
    root = config_dir.resolve()

    raw_main = read_yaml(root / MAIN_FILE, main_label, missing_ok=True)
    raw_modules = read_yaml(
        root / MODULES_FILE, modules_label, missing=_NO_MODULES_FILE, as_text=MODULES_AS_TEXT
    )
    variables = read_variables(root / ENV_FILE, env_label)
    substitution = Substitution(variables, f"in {env_label}")
    try:
        main = substitution.fill(raw_main, main_label, shown=MAIN_SHOWN)
        modules = substitution.fill(raw_modules, modules_label, shown=MODULES_SHOWN)
        return _build(
            main=main,
            modules=modules,
            config_dir=root,
            main_label=main_label,
            modules_label=modules_label,
            secrets=frozenset(substitution.secrets),
        )
    except ConfigError as exc:
        # A message may quote a value that came from the environment: scrub the whole of it, once,
        # before `str()` cuts or escapes anything. What it shows made from such a value (a
        # normalised path) may hold a piece of the secret only: that is hidden whole.
        redactor = Redactor(substitution.secrets)
        message = exc.message
        if exc.derived is not None and redactor.holds(exc.derived[1]):
            message = message.replace(exc.derived[0], MASK)
        raise exc.with_message(redactor.scrub(message)) from None


def read_yaml(
    path: Path,
    label: str,
    *,
    missing_ok: bool = False,
    missing: str = "file not found",
    as_text: tuple[TextPath, ...] = (),
) -> dict[str, Any]:
    """The top-level mapping of a YAML file (`{}` when empty, or when missing with `missing_ok`);
    `label` names it in errors, `missing` is the message when it is not there. The file's size,
    nesting and alias expansion are bounded, and a repeated key is refused (`yamlfile`); the
    scalars `as_text` names are read as the text written."""
    try:
        text = read_text(path)
    except FileNotFoundError:
        if path.is_symlink():  # its target is gone: silently using the defaults would lie
            what = "a symbolic link to a file that does not exist"
            raise ConfigError(label, "", f"cannot read file: {what}") from None
        if missing_ok:
            return {}
        raise ConfigError(label, "", missing) from None
    except IsADirectoryError:
        raise ConfigError(label, "", "cannot read file: is a directory") from None
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(label, "", f"cannot read file: not UTF-8 ({exc.reason})") from None
    except ValueError as exc:
        raise ConfigError(label, "", f"cannot read file: {exc}") from None
    try:
        data = load_yaml(text, as_text)
    except RefusedYAMLError as exc:
        raise ConfigError(label, _position(exc.problem_mark), str(exc.problem)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unparsable"
        if mark is not None and _tab_at(text, mark):
            problem += " (a tab: YAML indents with spaces only)"
        raise ConfigError(label, _position(mark), f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(label, "", f"invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(label, "", f"expected a mapping at the top level, got {describe(data)}")
    return data


def _tab_at(text: str, mark: yaml.Mark) -> bool:
    """Whether the character YAML stopped at, or the indentation before it, is a tab."""
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return False
    line = lines[mark.line]
    return "\t" in line[: mark.column + 1]


def _position(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""


def _build(
    *,
    main: dict[str, Any],
    modules: dict[str, Any],
    config_dir: Path,
    main_label: str,
    modules_label: str,
    secrets: frozenset[str],
) -> AppConfig:
    check_keys(main, MAIN_KEYS, main_label, "")
    check_keys(modules, MODULES_KEYS, modules_label, "")
    supervision = build_supervision(main.get("supervision"), main_label, "supervision")
    return AppConfig(
        config_dir=config_dir,
        main_file=config_dir / MAIN_FILE,
        modules_file=config_dir / MODULES_FILE,
        app=build_app(main.get("app"), main_label, "app"),
        resources=build_resources(main.get("resources"), main_label, "resources"),
        logging=build_logging(main.get("logging"), main_label, "logging", config_dir.parent),
        error_handling=build_error_handling(
            main.get("error_handling"), main_label, "error_handling"
        ),
        supervision=supervision,
        bus=build_bus(main.get("bus"), main_label, "bus"),
        notifications=build_notifications(main.get("notifications"), main_label, "notifications"),
        hot_reload=expect_bool(main.get("hot_reload", False), main_label, "hot_reload"),
        metrics=build_metrics(main.get("metrics"), main_label, "metrics"),
        cluster=build_cluster(main.get("cluster"), main_label, "cluster", config_dir),
        modules=build_modules(
            modules.get("modules"), modules_label, "modules", config_dir, supervision
        ),
        secrets=secrets,
    )
