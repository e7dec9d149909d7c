"""`cluster:` of `main.yaml`: the NATS servers this host joins, its name there, what it exports,
and how it authenticates. Absent (or null) means one host alone, with no bridge."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from module_sdk.event import Pattern
from orchestrator.config.errors import ConfigError
from orchestrator.config.model import ClusterCredentials, ClusterSection, ClusterTLS
from orchestrator.config.validate import (
    Validator,
    child,
    describe,
    expect_list,
    expect_mapping,
    expect_str,
    item,
    validate_fields,
)

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # one NATS subject token, of a safe alphabet
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")
URL_SCHEMES = ("nats://", "tls://")
_CREDENTIAL_WAYS = (("token",), ("user", "password"), ("nkey_seed",), ("creds",))


_USER_INFO = re.compile(r"(?<=://)[^/@]*@")


def _server(value: Any, file: str, where: str) -> str:
    if isinstance(value, str) and _USER_INFO.search(value):
        # Credentials in a URL would show wherever the URL does (logs, errors): never quoted.
        raise ConfigError(
            file,
            where,
            "a user or password in a server URL is not allowed: use cluster.credentials",
        )
    if (
        not isinstance(value, str)
        or not value.startswith(URL_SCHEMES)
        or len(value) <= len("nats://")
        or any(c.isspace() or not c.isprintable() for c in value)
    ):
        raise ConfigError(file, where, f"expected a nats:// or tls:// URL, got {describe(value)}")
    return value


def _servers(value: Any, file: str, where: str) -> tuple[str, ...]:
    servers = expect_list(value, file, where)
    if not servers:
        raise ConfigError(file, where, "expected a non-empty list of nats:// or tls:// URLs")
    return tuple(_server(url, file, item(where, index)) for index, url in enumerate(servers))


def _name(value: Any, file: str, where: str, *, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(file, where, f"expected {what}, got {describe(value)}")
    return value


def _export(value: Any, file: str, where: str) -> tuple[str, ...]:
    patterns = expect_list(value, file, where)
    for index, pattern in enumerate(patterns):
        try:
            Pattern.parse(pattern)
        except ValueError as exc:
            raise ConfigError(file, item(where, index), str(exc)) from None
    return tuple(patterns)


def _path(value: Any, file: str, where: str, *, base: Path) -> Path:
    """A file that exists, relative to `base` unless absolute."""
    text = expect_str(value, file, where, allow_empty=False)
    path = (base / Path(text).expanduser()).resolve()
    if not path.is_file():
        raise ConfigError(file, where, f"no such file: {path}", derived=(str(path), text))
    return path


def build_credentials(raw: Any, file: str, where: str, base: Path) -> ClusterCredentials | None:
    """`cluster.credentials:` exactly one of `token`, `user` + `password`, `nkey_seed` (a file),
    `creds` (a file); files are resolved against `base` (the config directory)."""
    path = partial(_path, base=base)
    secret = partial(expect_str, allow_empty=False)
    fields: dict[str, Validator] = {
        "token": secret,
        "user": secret,
        "password": secret,
        "nkey_seed": path,
        "creds": path,
    }
    mapping = expect_mapping(raw, file, where, allow_null=True)
    if not mapping:
        return None
    values = validate_fields(mapping, fields, file, where)
    ways = [way for way in _CREDENTIAL_WAYS if any(key in values for key in way)]
    if len(ways) != 1:
        raise ConfigError(
            file,
            where,
            "expected exactly one of: token, user + password, nkey_seed, creds; got "
            + (" and ".join("+".join(k for k in way if k in values) for way in ways) or "none"),
        )
    for key in ways[0]:
        if key not in values:
            raise ConfigError(file, child(where, key), "user and password go together")
    return ClusterCredentials(**values)


def build_tls(raw: Any, file: str, where: str, base: Path) -> ClusterTLS | None:
    """`cluster.tls:` `ca`, `cert`, `key` file paths (`cert` and `key` go together)."""
    path = partial(_path, base=base)
    values = validate_fields(
        expect_mapping(raw, file, where, allow_null=True),
        {"ca": path, "cert": path, "key": path},
        file,
        where,
    )
    if not values:
        return None
    if ("cert" in values) != ("key" in values):
        missing = "key" if "cert" in values else "cert"
        raise ConfigError(file, child(where, missing), "cert and key go together")
    return ClusterTLS(**values)


def build_cluster(raw: Any, file: str, where: str, base: Path) -> ClusterSection | None:
    """`cluster:`, or None when absent or null. `servers` is required."""
    if raw is None:
        return None
    fields: dict[str, Validator] = {
        "servers": _servers,
        "name": partial(
            _name, pattern=_TOKEN, what="a NATS subject token (letters, digits, _ and -)"
        ),
        "host": partial(_name, pattern=_HOST, what="a host name (letters, digits, _, - and .)"),
        "export": _export,
        "credentials": partial(build_credentials, base=base),
        "tls": partial(build_tls, base=base),
    }
    values = validate_fields(expect_mapping(raw, file, where), fields, file, where)
    if "servers" not in values:
        raise ConfigError(file, child(where, "servers"), "required key is missing")
    return ClusterSection(**values)
