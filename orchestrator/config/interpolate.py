"""`${VAR}` and `${VAR:-default}` substitution inside the string scalars of a raw YAML tree.

Values come from the process environment first, then from an optional `.env` file beside the
configuration (read with python-dotenv). `$${` is a literal `${`. Every value filled in, defaults
included, is recorded as a secret so that it can be redacted from logs and events. Substitution
never changes a value's type: `port: ${PORT}` is the string `'5555'`, which an integer setting
refuses. Mapping keys are not interpolated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.validate import child, item

_REFERENCE = re.compile(
    r"\$\$\{"  # escape: a literal ${
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|\$\{"  # anything else that opens a reference is malformed
)


def read_variables(env_file: Path, env_label: str) -> dict[str, str]:
    """The variables `${VAR}` may name: `env_file`'s (if it exists), overridden by `os.environ`."""
    values: dict[str, str] = {}
    if env_file.is_file():
        from dotenv import dotenv_values  # noqa: PLC0415  (only when there is a .env to read)

        try:
            raw = dotenv_values(env_file)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(env_label, "", f"cannot read file: {exc}") from exc
        values.update({key: value for key, value in raw.items() if value is not None})
    values.update(os.environ)
    return values


def interpolate(
    tree: Any, file: str, variables: Mapping[str, str], env_label: str, where: str = ""
) -> tuple[Any, set[str]]:
    """A copy of `tree` with every reference in its strings substituted, and the set of values
    substituted. A reference to an unset variable without a default raises `ConfigError` at the
    string's location; `env_label` names the `.env` file in that message."""
    substitution = _Substitution(file, variables, env_label)
    return substitution.walk(tree, where), substitution.secrets


class _Substitution:
    """One pass over one file's tree, collecting the values it fills in."""

    def __init__(self, file: str, variables: Mapping[str, str], env_label: str) -> None:
        self.file = file
        self.variables = variables
        self.env_label = env_label
        self.secrets: set[str] = set()

    def walk(self, node: Any, where: str) -> Any:
        if isinstance(node, str):
            return _REFERENCE.sub(lambda match: self.replace(match, where), node)
        if isinstance(node, Mapping):
            return {key: self.walk(value, child(where, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [self.walk(value, item(where, index)) for index, value in enumerate(node)]
        return node

    def replace(self, match: re.Match[str], where: str) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            raise ConfigError(
                self.file, where, "malformed ${...} reference (write $${ for a literal ${)"
            )
        value = self.variables.get(name)
        default = match.group("default")
        if default is not None and not value:  # `:-` also applies to an empty value, as in sh
            value = default
        if value is None:
            raise ConfigError(
                self.file,
                where,
                f"environment variable {name} is not set (nor in {self.env_label})",
            )
        if value:
            self.secrets.add(value)
        return value
