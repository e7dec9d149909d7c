"""`depends_on:` of one module: the modules it needs running, and per edge what it does when one
of them stops running (`on_failure`: `restart`, the default; `stop`; `ignore`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from orchestrator.config.errors import ConfigError
from orchestrator.config.model import DEPENDENCY_POLICIES, DependencyPolicy
from orchestrator.config.validate import (
    check_keys,
    child,
    describe,
    expect_choice,
    expect_list,
    item,
)

_EDGE_KEYS = ("name", "on_failure")


def build_depends_on(
    value: Any, file: str, where: str, name_check: Callable[[Any, str, str], str]
) -> tuple[tuple[str, ...], dict[str, DependencyPolicy]]:
    """`depends_on`: a name, or a list whose items are a name (`restart` follows) or a mapping
    `{name: NAME, on_failure: restart|stop|ignore}`. Returns the names in order, without
    repeats, and the policy of each edge that is not `restart`. `name_check(value, file, where)`
    validates one module name."""
    if isinstance(value, str):
        value = [value]
    entries = expect_list(value, file, where, allow_null=True)
    names: list[str] = []
    policies: dict[str, DependencyPolicy] = {}
    for index, entry in enumerate(entries):
        at = item(where, index)
        policy: DependencyPolicy = "restart"
        if isinstance(entry, dict):
            check_keys(entry, _EDGE_KEYS, file, at)
            if "name" not in entry:
                raise ConfigError(file, child(at, "name"), "required key is missing")
            name = name_check(entry["name"], file, child(at, "name"))
            raw_policy = entry.get("on_failure", "restart")
            checked = expect_choice(raw_policy, file, child(at, "on_failure"), DEPENDENCY_POLICIES)
            policy = cast(DependencyPolicy, checked)
        elif isinstance(entry, str):
            name = name_check(entry, file, at)
        else:
            raise ConfigError(
                file,
                at,
                "expected a module name or a mapping {name: NAME, on_failure: "
                f"{'|'.join(DEPENDENCY_POLICIES)}}}, got {describe(entry)}",
            )
        if name in names:
            if policies.get(name, "restart") != policy:
                raise ConfigError(file, at, f"{describe(name)} is listed twice, differently")
            continue
        names.append(name)
        if policy != "restart":
            policies[name] = policy
    return tuple(names), policies
