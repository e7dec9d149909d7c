"""`orchestrator test` asks each module for its tests in a probe process: whatever the module does
at import (print, exit, start a process that outlives the probe), the answer is a list or one
line saying why not, and the command never hangs on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import wait_until

from orchestrator.config import ModuleSpec
from orchestrator.testrun.discover import DiscoveryError, discover

_API = "def initialize(event_bus, config):\n    pass\n\n\ndef shutdown():\n    pass\n"


def _module(tmp_path: Path, source: str) -> ModuleSpec:
    path = tmp_path / "m.py"
    path.write_text(source + "\n" + _API)
    (tmp_path / "test_m.py").write_text("def test_x():\n    pass\n")
    return ModuleSpec(name="m", path=path)


def test_a_module_that_prints_at_import_still_lists_its_tests(tmp_path: Path) -> None:
    spec = _module(
        tmp_path,
        "print('loading', end='')\nprint('[1, 2]')\n"
        "def get_tests():\n    print('asked')\n    return ['test_m.py']\n",
    )
    (found,) = discover([spec])
    assert found.paths == ((tmp_path / "test_m.py").resolve(),)


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("import sys\nsys.exit(0)\n", "importing it raised SystemExit: 0"),
        ("def get_tests():\n    raise SystemExit(3)\n", "get_tests() raised SystemExit: 3"),
        ("def get_tests():\n    return 'test_m.py'\n", "must return a list of strings"),
        ("def get_tests():\n    return ['test_m.py\\x00x']\n", "a path with a NUL byte"),
    ],
)
def test_what_a_module_does_instead_is_one_line(tmp_path: Path, source: str, said: str) -> None:
    with pytest.raises(DiscoveryError, match=re.escape(said)):
        discover([_module(tmp_path, source)])


def test_a_process_the_module_started_does_not_hold_the_command(tmp_path: Path) -> None:
    """It inherited the probe's pipes: reading them to their end waited for it (200 s)."""
    marker = tmp_path / "child.pid"
    spec = _module(
        tmp_path,
        "import subprocess\n"
        f"child = subprocess.Popen(['sleep', '200'])\nopen({str(marker)!r}, 'w').write(str(child.pid))\n"
        "def get_tests():\n    return ['test_m.py']\n",
    )
    (found,) = discover([spec])
    assert found.paths is not None
    pid = int(marker.read_text())
    wait_until(lambda: _gone(pid), 5, "the module's process killed with the probe")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def test_ctrl_c_while_probes_run_kills_every_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each probe runs in a session of its own (so that what its module starts dies with it),
    out of reach of the terminal's Ctrl+C: an interrupted `test` left the others running."""
    from orchestrator.testrun import discover as discovery

    specs = []
    for name in ("a", "b", "c"):
        directory = tmp_path / name
        directory.mkdir()
        path = directory / f"{name}.py"
        pid_file = directory / "pid"
        path.write_text(
            f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
            "time.sleep(300)\n" + _API
        )
        specs.append(ModuleSpec(name=name, path=path))

    def interrupted(probes: object) -> object:
        wait_until(lambda: all((tmp_path / n / "pid").exists() for n in "abc"), 20, "every import")
        raise KeyboardInterrupt

    monkeypatch.setattr(discovery, "_collect", interrupted)
    with pytest.raises(KeyboardInterrupt):
        discover(specs)
    for name in "abc":
        pid = int((tmp_path / name / "pid").read_text())
        wait_until(lambda pid=pid: _gone(pid), 5, f"probe {pid} killed")
