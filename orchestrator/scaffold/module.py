"""The files of a new module (what `orchestrator new NAME` and `orchestrator init` write), and its
entry in `modules.yaml`."""

from __future__ import annotations

import json
from typing import Any

MODULE = '''\
"""{name}: what this module does, in one line."""

from __future__ import annotations

import logging
from typing import Any

from module_sdk import Event, EventBus

log = logging.getLogger(__name__)

_bus: EventBus | None = None


def on_ping(event: Event) -> None:
    """Answer every `{namespace}.ping` by publishing `{namespace}.pong` with the same data."""
    if _bus is not None:
        _bus.publish("{namespace}.pong", event.data)


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    """Subscribe and start work here; `config` is this module's `config:` in modules.yaml."""
    global _bus
    _bus = event_bus
    event_bus.subscribe("{namespace}.ping", on_ping)
    log.info("{name} ready")


def shutdown() -> None:
    """Stop threads and release resources here."""
    if _bus is not None:
        _bus.unsubscribe("{namespace}.ping", on_ping)


def health() -> bool | str:
    """Optional: called every `health_interval` seconds while the module runs, on a thread of
    its own. Return True when healthy, or a message saying what is wrong: `health_retries`
    failures in a row restart the module as `unhealthy: <message>`. Keep it quick. In a test,
    `module_sdk.testing.check_health(module)` calls it as the supervisor would."""
    return True if _bus is not None else "not initialized"


def get_tests() -> list[str]:
    """Test paths, relative to this directory, that `orchestrator test` runs."""
    return ["tests"]
'''

TEST = '''\
"""Tests of {name}, run by `orchestrator test {name}`."""

from pathlib import Path

from module_sdk.testing import InProcessBus, load_module

module = load_module(Path(__file__).resolve().parent.parent)


def test_ping_is_answered_with_pong(event_bus: InProcessBus) -> None:
    module.initialize(event_bus, {{}})
    try:
        event_bus.publish("{namespace}.ping", {{"n": 1}})
        assert [e.data for e in event_bus.events("{namespace}.pong")] == [{{"n": 1}}]
    finally:
        module.shutdown()
'''


def event_namespace(name: str) -> str:
    """The event namespace (and file-name stem) for module `name`: `mod-hello` -> `mod_hello`.

    A module name (`NAME_PATTERN`) may hold `.` and `-`; an event namespace is one segment without
    `.`, and a test file's stem must be importable."""
    return name.replace("-", "_").replace(".", "_")


def module_files(name: str) -> dict[str, str]:
    """The files of module `name`, by path relative to its directory: a package with
    initialize/shutdown/get_tests and a test that passes."""
    namespace = event_namespace(name)
    return {
        "__init__.py": MODULE.format(name=name, namespace=namespace),
        f"tests/test_{namespace}.py": TEST.format(name=name, namespace=namespace),
    }


def module_entry(name: str, path: str) -> dict[str, Any]:
    """The `modules.yaml` entry of a new module; `path` is relative to modules.yaml."""
    return {"name": name, "path": path, "enabled": True, "config": {}}


def entry_text(entry: dict[str, Any], indent: str = "  ") -> str:
    """`entry` as a block list item of `modules:`, each line prefixed with `indent`."""
    lines = []
    for index, (key, value) in enumerate(entry.items()):
        lead = "- " if index == 0 else "  "
        lines.append(f"{indent}{lead}{key}: {yaml_scalar(value)}\n")
    return "".join(lines)


def yaml_scalar(value: Any) -> str:
    """A value in YAML flow style: JSON is valid YAML, and its strings are always quoted."""
    return json.dumps(value)
