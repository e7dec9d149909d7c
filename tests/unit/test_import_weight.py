"""What the CLI and the supervisor import before they need it: each is checked in a fresh
interpreter (`python -X importtime`, or `sys.modules` after the import), so that a top-level
import of a heavy package somewhere in the graph fails here, by name, rather than as a slower
start-up or a bigger supervisor in `make bench`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from orchestrator import __version__

# What `orchestrator --version` may not load: all of it is for commands that do something.
NOT_FOR_VERSION = (
    "click",
    "zmq",
    "msgpack",
    "yaml",
    "psutil",
    "watchdog",
    "httpx",
    "tenacity",
    "pybreaker",
    "prometheus_client",
    "asyncio",
    "orchestrator.config",
    "typing",  # 15-20 ms by itself
)
# What a supervisor with the defaults (no metrics, no webhooks, no hot reload, no module venvs,
# no cluster) may not load: it would only cost it memory for as long as it runs. hashlib, hmac
# and secrets load OpenSSL's libcrypto (~3.5 MB).
NOT_FOR_SUPERVISOR = (
    "click",
    "orchestrator.cli",
    "watchdog",
    "httpx",
    "tenacity",
    "prometheus_client",
    "asyncio",
    "importlib.metadata",
    "hashlib",
    "_hashlib",
    "hmac",
    "secrets",
    "ssl",
    "gzip",
    "shutil",  # and with it bz2 and lzma (0.6 MB): module venv builds and `down` use it
    "bz2",
    "lzma",
    "difflib",
    "zoneinfo",  # a schedule's time zone
    "shlex",  # module venvs' requirement options
    "module_sdk.bus",  # the modules' side of the bus (a standby's too): not the supervisor's
    "module_sdk.standby",
    "broker.proxy",  # the broker runs in a process of its own; the supervisor needs its names
    "broker.groups",
)
# What any command's module may not load at import (each loads them when it runs, if it must).
NOT_FOR_COMMANDS = ("watchdog", "httpx", "tenacity", "prometheus_client", "asyncio", "psutil")
# What a command that only talks to the supervisor (`status`) may not load on top: each is for a
# config section or an action it does not have (venvs, gzip, clusters, schedules).
NOT_FOR_STATUS = ("socket", "shutil", "shlex", "zoneinfo", "bz2", "lzma")
# The modules that may still define a class with `@dataclass` at import (each about 1 ms of
# exec on a small VM, in every CLI call or supervisor start): a new one, or one of the modules
# moved to `orchestrator.record.record`, fails here by name. Remove a name once its module has
# moved; never add one without a reason a record cannot do.
DATACLASS_MODULES = {
    "broker.group_state",  # (moved out of broker.group_table)
    "module_sdk.event",
    "orchestrator.bus_keys",
    "orchestrator.child",
    "orchestrator.cluster.peers",
    "orchestrator.cluster.settings",
    "orchestrator.control_port",
    "orchestrator.handover",
    "orchestrator.notify.payload",
    "orchestrator.processes",
    "orchestrator.reconcile",
    "orchestrator.resources",
    "orchestrator.venv.environments",
    "orchestrator.venv.plan",
    "orchestrator.venv.sdk",
}
# Which modules defined such classes, printed by a fresh interpreter after its imports.
_DATACLASS_REPORT = """
import sys
ours = [n for n in list(sys.modules) if n.split(".")[0] in ("orchestrator", "module_sdk", "broker")]
print("\\n".join(sorted({
    name for name in ours for value in vars(sys.modules[name]).values()
    if isinstance(value, type) and value.__module__ == name
    and "__dataclass_params__" in value.__dict__
})))
"""


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS` run from an empty directory, which must exit 0."""
    out = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,  # the assertion says why, with its stderr
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    """The modules `python -X importtime ARGS` imports, run from an empty directory."""
    out = python(tmp_path, "-X", "importtime", *args)
    lines = [line for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert len(lines) > 10, out.stderr[-2000:]  # importtime's output, or this test proves nothing
    return {line.rsplit("|", 1)[1].strip() for line in lines[1:]}


def loaded(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """Which of `forbidden` (packages, with their submodules) are in `modules`."""
    return sorted(
        name for name in forbidden if any(m == name or m.startswith(f"{name}.") for m in modules)
    )


def test_version_imports_almost_nothing(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "-m", "orchestrator", "--version")
    assert loaded(modules, NOT_FOR_VERSION) == []
    ours = sorted(m for m in modules if m.startswith("orchestrator"))
    assert ours == ["orchestrator", "orchestrator.cli"]


def test_version_prints_what_click_printed(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert out.stdout == f"orchestrator, version {__version__}\n"


def test_the_group_imports_no_command(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "-c", "import orchestrator.cli.group")
    commands = sorted(m for m in modules if m.startswith("orchestrator.cli."))
    assert commands == ["orchestrator.cli.common", "orchestrator.cli.group"]


@pytest.mark.parametrize("command", ["up", "status", "down", "logs", "events", "init"])
def test_a_command_module_loads_nothing_heavy_it_does_not_run(tmp_path: Path, command: str) -> None:
    modules = imported_by(tmp_path, "-c", f"import orchestrator.cli.{command}")
    assert loaded(modules, NOT_FOR_COMMANDS) == []


def test_the_supervisor_loads_only_what_its_defaults_need(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "-c", "import orchestrator.daemon, orchestrator.supervisor")
    assert loaded(modules, NOT_FOR_SUPERVISOR) == []
    assert "zmq" in modules  # the check sees the supervisor's real imports


def test_status_loads_nothing_for_sections_it_does_not_read(tmp_path: Path) -> None:
    modules = imported_by(tmp_path, "-c", "import orchestrator.cli.group, orchestrator.cli.status")
    assert loaded(modules, NOT_FOR_STATUS) == []
    assert "zmq" in modules  # the check sees the command's real imports


@pytest.mark.parametrize(
    "imports",
    [
        "orchestrator.daemon, orchestrator.supervisor",
        "orchestrator.cli.group, orchestrator.cli.up, orchestrator.cli.status",
        "orchestrator.metrics.server, orchestrator.scheduler, orchestrator.logsetup",
    ],
)
def test_no_new_module_defines_dataclasses_at_import(tmp_path: Path, imports: str) -> None:
    out = python(tmp_path, "-c", f"import {imports}\n{_DATACLASS_REPORT}")
    defined = set(out.stdout.split())
    assert defined, "no @dataclass found at all: the check no longer sees them"
    assert sorted(defined - DATACLASS_MODULES) == []


def test_every_listed_command_resolves_to_itself() -> None:
    from orchestrator.cli.group import COMMANDS, cli

    context = click.Context(cli)
    assert cli.list_commands(context) == list(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None and command.name == name, name


def test_an_unknown_command_is_still_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "no-such-command"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "No such command 'no-such-command'" in out.stderr


def test_hot_reload_costs_watchdog_but_not_ctypes_util() -> None:
    # watchdog's inotify module imports ctypes.util (shutil, tempfile, bz2, lzma: 0.7 MB
    # resident) and, in the versions we run, never uses it: orchestrator.watch imports it with
    # a stand-in. A watchdog that uses it at import loads the real one, and this fails.
    probe = (
        "import sys, ctypes\n"
        "from orchestrator.watch import _observer_class\n"
        "_observer_class()\n"
        "heavy = [m for m in ('ctypes.util', 'shutil', 'tempfile', 'bz2', 'lzma') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "import ctypes.util\n"
        "assert ctypes.util.find_library('c'), 'the real ctypes.util after it'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported with hot reload: {done.stdout.strip()}"


# A fresh interpreter in the state `up -d` forks in (the group and the `up` command imported, a
# command run through click), then what `orchestrator.daemon.become` does before it supervises.
_FORGET_CLI = """
import gc, sys
from orchestrator.cli.group import cli
import orchestrator.cli.up, orchestrator.cli.status
try:
    cli.main(["up", "--help"], prog_name="orchestrator")
except SystemExit:
    pass
del cli
from orchestrator.daemon import _forget_cli
_forget_cli()
print(sorted(n for n in sys.modules if n.split(".")[0] == "click" or n.startswith("orchestrator.cli.")))
print(sum(
    1 for o in gc.get_objects()
    if isinstance(getattr(o, "__module__", None), str) and o.__module__.split(".")[0] == "click"
))
"""


def test_a_detached_supervisor_forgets_click_and_the_commands(tmp_path: Path) -> None:
    # 1.2 MB of its RSS. What kept click alive after its modules were unloaded: the commands'
    # modules as attributes of orchestrator.cli, and typing's caches (click's generic classes,
    # its overloads). A Python whose typing caches them elsewhere fails here.
    out = python(tmp_path, "-c", _FORGET_CLI)
    modules, live = out.stdout.splitlines()[-2:]
    assert modules == "[]"
    assert live == "0", f"{live} objects of click still alive"
