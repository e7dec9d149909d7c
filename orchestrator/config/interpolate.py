"""`${VAR}` and `${VAR:-default}` substitution inside the string scalars of a raw YAML tree.

Values come from the process environment first, then from an optional `.env` file beside the
configuration (parsed with python-dotenv; its own values filled in by the same rules, see
`_read_dotenv`). `$${` is a literal `${`. Every value filled in from the environment or `.env` is
recorded as a secret so that it can be redacted from logs and events; a default is written in
the file for all to read, and is not. Substitution never changes a value's type: `port: ${PORT}`
is the string `'5555'`, which an integer setting refuses. Mapping keys are not interpolated."""

from __future__ import annotations

import io
import os
import re
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.validate import child, item
from orchestrator.config.yamlfile import MAX_BYTES, MAX_CHARS, TextPath, read_text

_SINGLE_QUOTED = re.compile(r"\s*(?:export[^\S\r\n]+)?(?:'[^']+'|[^=#\s]+)[^\S\r\n]*=[^\S\r\n]*'")
"""A `.env` line whose value is in single quotes (python-dotenv's own grammar, up to the quote)."""
_REFERENCE = re.compile(
    r"\$\$\{"  # escape: a literal ${
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|\$\{"  # anything else that opens a reference is malformed
)


def read_variables(env_file: Path, env_label: str) -> dict[str, str]:
    """The variables `${VAR}` may name: `env_file`'s (if it exists), overridden by `os.environ`."""
    values: dict[str, str] = {}
    if not env_file.is_file() and os.path.lexists(env_file):  # silently using defaults would lie
        what = "a directory" if env_file.is_dir() else "not a regular file"
        if not env_file.exists():
            what = "a symbolic link to a file that does not exist"
        raise ConfigError(env_label, "", f"cannot read file: {what}")
    if env_file.is_file():
        try:
            text = read_text(env_file, MAX_BYTES)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(env_label, "", f"cannot read file: {exc}") from None
        values.update(_read_dotenv(text, env_label))
    values.update(os.environ)
    return values


def _read_dotenv(text: str, env_label: str) -> dict[str, str]:
    """The values of a `.env` file, each with its references filled in by the rules of the YAML
    files (`Substitution`), as docker compose fills them: from the environment first, then from
    the lines above; an unset variable is an error naming the line's variable; `$${` is a literal
    `${`; a single-quoted value is taken as written. (python-dotenv's own filling lets the file
    win over the environment and makes an unset variable, or one set further down, an empty
    string, silently.) Filling a line's value in stops past `MAX_CHARS` characters of values
    filled in, over the whole file: a few lines that each repeat the one before a few hundred
    times are a bomb."""
    from dotenv.parser import parse_stream  # noqa: PLC0415  (only when there is a .env to read)

    values: dict[str, str] = {}
    substitution = Substitution(ChainMap(os.environ, values), "on a line above")
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:  # dotenv would skip it (and a variable with it), with a warning
            line = binding.original.line  # its text is not shown: it may hold a secret
            raise ConfigError(
                env_label, f"line {line}", "cannot parse it: expected NAME=value, # comment"
            )
        if binding.key is None or binding.value is None:  # a comment, or a name alone
            continue
        if _SINGLE_QUOTED.match(binding.original.string):
            values[binding.key] = binding.value
        else:
            values[binding.key] = substitution.fill(binding.value, env_label, binding.key)
    return values


class Substitution:
    """Fills the references of one or more trees from `variables`, collecting the values it filled
    in (`secrets`) and refusing to produce more than `MAX_CHARS` characters of them in all (a long
    value referenced many times, or through an alias, is a bomb of its own)."""

    def __init__(self, variables: Mapping[str, str], elsewhere: str) -> None:
        self.variables = variables
        self.elsewhere = elsewhere  # where else an unset variable was looked for
        self.secrets: set[str] = set()
        self._filled = 0

    def fill(
        self, tree: Any, file: str, where: str = "", *, shown: tuple[TextPath, ...] = ()
    ) -> Any:
        """A copy of `tree` with every reference in its strings substituted. A reference to an
        unset variable without a default raises `ConfigError` at the string's location. The
        values filled in are secrets, except at the places `shown` names (as `load_yaml`'s
        `as_text` does): names, paths, schedules, shown as written wherever the config is."""
        return self._walk(tree, file, where, (), shown)

    def _walk(
        self, node: Any, file: str, where: str, at: TextPath, shown: tuple[TextPath, ...]
    ) -> Any:
        if isinstance(node, str):
            secret = not any(_leads_to(path, at) for path in shown)
            return _REFERENCE.sub(lambda match: self._replace(match, file, where, secret), node)
        if isinstance(node, Mapping):
            return {
                key: self._walk(value, file, child(where, key), (*at, key), shown)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [
                self._walk(value, file, item(where, index), (*at, None), shown)
                for index, value in enumerate(node)
            ]
        return node

    def _replace(self, match: re.Match[str], file: str, where: str, secret: bool = True) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group("name")
        if name is None:
            raise ConfigError(
                file, where, "malformed ${...} reference (write $${ for a literal ${)"
            )
        value = self.variables.get(name)
        default = match.group("default")
        if default is not None and "${" in default:  # the first `}` would end the reference
            raise ConfigError(
                file, where, f"the default of ${{{name}:-...}} cannot hold a ${{...}} reference"
            )
        if default is not None and not value:  # `:-` also applies to an empty value, as in sh
            value = default
        elif value and secret:  # a default is written in the file for all to read: not a secret
            self.secrets.add(value)
        if value is None:
            raise ConfigError(
                file, where, f"environment variable {name} is not set (nor {self.elsewhere})"
            )
        self._filled += len(value)
        if self._filled > MAX_CHARS:
            raise ConfigError(
                file,
                where,
                f"the values of ${{...}} references add up to more than {MAX_CHARS} characters",
            )
        return value


def _leads_to(path: TextPath, at: TextPath) -> bool:
    """Whether `at` (keys, None for a list's item) is the place `path` names (None: any)."""
    return len(path) == len(at) and all(p is None or p == a for p, a in zip(path, at, strict=True))
