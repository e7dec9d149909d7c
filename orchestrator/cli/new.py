"""`orchestrator new NAME`: scaffold a module."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option
from orchestrator.config.modules import NAME_PATTERN
from orchestrator.config.validate import describe

MODULE = '''\
"""{name}: what this module does, in one line."""

from __future__ import annotations

import logging
from typing import Any

from module_sdk import Event, EventBus

log = logging.getLogger(__name__)

_bus: EventBus | None = None


def on_ping(event: Event) -> None:
    """Answer every `{name}.ping` with a `{name}.pong` carrying the same data."""
    if _bus is not None:
        _bus.publish("{name}.pong", event.data)


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    """Subscribe and start work here; `config` is this module's `config:` in modules.yaml."""
    global _bus
    _bus = event_bus
    event_bus.subscribe("{name}.ping", on_ping)
    log.info("{name} ready")


def shutdown() -> None:
    """Stop threads and release resources here."""
    if _bus is not None:
        _bus.unsubscribe("{name}.ping", on_ping)


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
        event_bus.publish("{name}.ping", {{"n": 1}})
        assert [e.data for e in event_bus.events("{name}.pong")] == [{{"n": 1}}]
    finally:
        module.shutdown()
'''


@click.command()
@click.argument("name")
@config_option
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to create it. Default: modules-backend/ beside the config directory.",
)
@click.option("--add", is_flag=True, help="Also append its entry to modules.yaml.")
def new(app: App, name: str, directory: Path | None, add: bool) -> None:
    """Create module NAME: a package with initialize/shutdown/get_tests and a passing test.

    Prints the modules.yaml entry to add, or appends it with --add.
    """
    if not NAME_PATTERN.fullmatch(name):
        abort(
            f"invalid module name {describe(name)}: use letters, digits, '_', '.' and '-'",
            exit_codes.USAGE,
        )
    base = directory if directory is not None else app.config_dir.parent / "modules-backend"
    target = base / name
    if target.exists():
        abort(f"{target} already exists")
    event_namespace = name.replace("-", "_").replace(".", "_")
    (target / "tests").mkdir(parents=True)
    (target / "__init__.py").write_text(MODULE.format(name=event_namespace))
    (target / "tests" / f"test_{event_namespace}.py").write_text(TEST.format(name=event_namespace))
    modules_file = app.config_dir / "modules.yaml"
    relative = Path(_relative(target.resolve(), app.config_dir.resolve()))
    text = modules_file.read_text() if modules_file.exists() else ""
    indent = next(
        (m.group(1) for m in re.finditer(r"^( *)- ", text, re.MULTILINE)), "  "
    )  # match the list's own indentation
    fields = [f'- name: "{name}"', f'  path: "{relative}"', "  enabled: true", "  config: {}"]
    entry = "".join(f"{indent}{line}\n" for line in fields)
    click.echo(f"created {target}/__init__.py and {target}/tests/test_{event_namespace}.py")
    if add:
        if not modules_file.exists():
            abort(f"{modules_file}: not found; add this entry to it:\n{entry}")
        if "modules:" not in text or "modules: []" in text:
            abort(
                f"{modules_file}: no `modules:` list to append to; add this entry by hand:\n{entry}"
            )
        modules_file.write_text(text.rstrip("\n") + "\n\n" + entry)
        click.echo(f"added {name} to {modules_file}")
    else:
        click.echo(f"add it to {modules_file}:\n\n{entry}")
    click.echo(f"then: orchestrator test {name}; a running supervisor starts it at its next `up`")


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target, start)
