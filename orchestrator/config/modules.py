"""Builds the module entries of `modules.yaml`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, cast

from orchestrator.config.dependencies import build_depends_on
from orchestrator.config.environment import module_python, module_requirements
from orchestrator.config.errors import ConfigError
from orchestrator.config.limits import LIMIT_KEYS, build_limits
from orchestrator.config.model import LogLevel, ModuleSpec, SupervisionSettings
from orchestrator.config.scheduling import RUN_KEYS, build_run_keys
from orchestrator.config.sections import SUPERVISION_FIELDS, check_supervision, log_level
from orchestrator.config.validate import (
    check_keys,
    child,
    describe,
    expect_bool,
    expect_list,
    expect_mapping,
    expect_str,
    found,
    item,
)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Names whose logs/<name>.log is another's: app.log is the supervisor's own (two writers and two
# rotators on one file, and `orchestrator logs app` shows the supervisor's). In any case: on a
# file system that ignores case, App.log is app.log. (Nothing else of ours is written there that
# a name could reach: `.supervisor.lock` starts with a dot, which no name does.)
RESERVED_NAMES = frozenset({"app"})
RESERVED_WHY = "reserved: logs/app.log is the supervisor's own log; choose another name"
"""A module name: it is used in file names, so a safe subset of characters, at most 64."""

_OWN_KEYS = (
    "name",
    "path",
    "enabled",
    "config",
    "env",
    "depends_on",
    "log_level",
    "requirements",
    "python",
)
_GROUP_KEYS = ("work_group", "redeliver")  # grouped subscriptions: see module_sdk/groups.py
_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:#-]{0,63}")
MODULE_KEYS = (*_OWN_KEYS, *_GROUP_KEYS, *RUN_KEYS, *SUPERVISION_FIELDS, *LIMIT_KEYS)


def build_modules(
    raw: Any, file: str, where: str, modules_dir: Path, defaults: SupervisionSettings
) -> tuple[ModuleSpec, ...]:
    """The `modules:` list (null is empty); names must be unique."""
    entries = expect_list(raw, file, where, allow_null=True)
    first_seen: dict[str, str] = {}
    specs: list[ModuleSpec] = []
    for index, entry in enumerate(entries):
        entry_where = item(where, index)
        spec = build_module(entry, file, entry_where, modules_dir, defaults)
        if spec.name in first_seen:
            raise ConfigError(
                file,
                child(entry_where, "name"),
                f"duplicate module name {describe(spec.name)} (first at {first_seen[spec.name]})",
            )
        first_seen[spec.name] = entry_where
        specs.append(spec)
    _check_dependencies(specs, file, where)
    return tuple(specs)


def _check_dependencies(specs: list[ModuleSpec], file: str, where: str) -> None:
    """Every `depends_on` name is another enabled module, and there is no cycle."""
    by_name = {spec.name: spec for spec in specs}
    for index, spec in enumerate(specs):
        at = child(item(where, index), "depends_on")
        for dependency in spec.depends_on:
            target = by_name.get(dependency)
            if dependency == spec.name:
                raise ConfigError(file, at, f"{describe(spec.name)} cannot depend on itself")
            if target is None:
                raise ConfigError(file, at, f"unknown module {describe(dependency)}")
            if spec.enabled and not target.enabled:
                raise ConfigError(file, at, f"{describe(dependency)} is disabled")
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            index = next(i for i, s in enumerate(specs) if s.name == name)
            raise ConfigError(
                file,
                child(item(where, index), "depends_on"),
                "dependency cycle: " + " -> ".join(cycle),
            )
        visiting.append(name)
        for dependency in by_name[name].depends_on:
            visit(dependency)
        visiting.pop()
        done.add(name)

    for spec in specs:
        visit(spec.name)


def build_module(
    raw: Any, file: str, where: str, modules_dir: Path, defaults: SupervisionSettings
) -> ModuleSpec:
    """One entry: `name` and `path` required; `enabled`, `config`, `env` and any supervision key
    (overriding `defaults`) optional. A disabled module's path may be missing."""
    entry = expect_mapping(raw, file, where)
    check_keys(entry, MODULE_KEYS, file, where)
    for required in ("name", "path"):
        if required not in entry:
            raise ConfigError(file, child(where, required), "required key is missing")
    name = _name(entry["name"], file, child(where, "name"))
    enabled = expect_bool(entry.get("enabled", True), file, child(where, "enabled"))
    path = _module_path(entry["path"], file, child(where, "path"), modules_dir, enabled)
    config = expect_mapping(entry.get("config"), file, child(where, "config"), allow_null=True)
    _check_string_keys(config, file, child(where, "config"))
    env = _env(entry.get("env"), file, child(where, "env"))
    depends_on, policies = build_depends_on(
        entry.get("depends_on"), file, child(where, "depends_on"), _name
    )
    level = entry.get("log_level")
    level = log_level(level, file, child(where, "log_level")) if level is not None else None
    overrides = {
        key: SUPERVISION_FIELDS[key](value, file, child(where, key))
        for key, value in entry.items()
        if key in SUPERVISION_FIELDS
    }
    run_keys = build_run_keys(entry, file, where)
    if "schedule" in run_keys and "restart" not in overrides:
        overrides["restart"] = "never"  # a scheduled module runs again at its next time
    supervision = check_supervision(
        dataclasses.replace(defaults, **overrides), file, where, overridden=overrides
    )
    requirements, requirements_file = module_requirements(
        entry.get("requirements"), file, child(where, "requirements"), path, enabled
    )
    python = module_python(entry.get("python"), file, child(where, "python"), modules_dir, enabled)
    return ModuleSpec(
        name=name,
        path=path,
        enabled=enabled,
        config=config,
        supervision=supervision,
        env=env,
        depends_on=depends_on,
        dependency_policy=policies,
        log_level=cast(LogLevel | None, level),
        **run_keys,
        limits=build_limits(entry, file, where, modules_dir),
        work_group=_group(entry.get("work_group"), file, child(where, "work_group")),
        redeliver=expect_bool(entry.get("redeliver", False), file, child(where, "redeliver")),
        requirements=requirements,
        requirements_file=requirements_file,
        python=python,
    )


def _name(value: Any, file: str, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(
            file,
            where,
            "expected a name of up to 64 letters, digits, '_', '.' or '-', starting with a letter "
            f"or digit, got {describe(value)}",
        )
    if value.lower() in RESERVED_NAMES:
        raise ConfigError(file, where, f"{describe(value)} is {RESERVED_WHY}")
    return value


def _group(value: Any, file: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _GROUP_NAME.fullmatch(value):
        raise ConfigError(
            file,
            where,
            "expected a group name of up to 64 letters, digits, '_', '.', ':', '#' or '-', "
            f"starting with a letter, digit or '_', got {describe(value)}",
        )
    return value


def _module_path(value: Any, file: str, where: str, modules_dir: Path, enabled: bool) -> Path:
    text = expect_str(value, file, where, allow_empty=False)
    path = (modules_dir / text).resolve()
    derived = (str(path), text)  # hidden whole in errors if the text holds a secret
    if not path.exists():
        if enabled:
            hint = "" if Path(text).is_absolute() else " (a path is relative to modules.yaml)"
            raise ConfigError(file, where, f"no such file: {path}{hint}", derived=derived)
    elif path.is_dir():
        if not (path / "__init__.py").is_file():
            message = f"{path} is a directory without __init__.py"
            raise ConfigError(file, where, message, derived=derived)
    elif path.suffix != ".py":
        raise ConfigError(file, where, f"{path} is not a .py file", derived=derived)
    elif not path.is_file():  # a FIFO would hold its module's load until a writer came
        raise ConfigError(file, where, f"{path} is not a regular file", derived=derived)
    return path


_PLAIN = (str, int, float, bytes, type(None))  # bool is an int


def _check_string_keys(node: Any, file: str, where: str) -> None:
    """Free-form settings are passed to the module as is (over msgpack), so every mapping key must
    be a string and every value a string, number, boolean, null, list or mapping: YAML's dates and
    timestamps, say, must be quoted."""
    if not isinstance(node, (dict, list, *_PLAIN)):
        raise ConfigError(
            file,
            where,
            f"expected a string, number, boolean, null, list or mapping, got {type(node).__name__} "
            f"{node!s} (quote it to pass it as a string)",
        )
    if isinstance(node, int) and not -(2**63) <= node < 2**64:  # what msgpack can carry
        raise ConfigError(
            file,
            where,
            "an integer outside -2**63 .. 2**64-1 cannot be passed to a module "
            "(quote it to pass it as a string)",
        )
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise ConfigError(
                    file, child(where, key), f"expected a string key, got {describe(key)}"
                )
            _check_string_keys(value, file, child(where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_string_keys(value, file, item(where, index))


def _env(value: Any, file: str, where: str) -> dict[str, str]:
    env = expect_mapping(value, file, where, allow_null=True)
    result: dict[str, str] = {}
    for key, text in env.items():
        at = child(where, key)
        if not key or "=" in key or "\0" in key:
            # Neither putenv() nor exec() can carry such a name: a module could never start.
            raise ConfigError(
                file, at, f"expected a variable name without '=' or NUL characters, got {key!r}"
            )
        if not isinstance(text, str):  # an unquoted 8080 is '8080' (loader's MODULES_AS_TEXT)
            raise ConfigError(file, at, f"expected a string, got {found(text, at)}")
        if "\0" in text:
            raise ConfigError(file, at, "a value cannot contain a NUL character")
        result[key] = text
    return result
