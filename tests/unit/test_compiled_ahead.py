"""A standby compiles its module's source while it waits (module_sdk/standby.py); the loader takes
that code only if the file still holds the very source that was compiled."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from module_sdk.loader import load_module
from module_sdk.standby import precompile

MODULE = (
    "WHO = 'compiled now'\n\ndef initialize(bus, config):\n    pass\n\ndef shutdown():\n    pass\n"
)
OTHER = MODULE.replace("compiled now", "compiled ahead")


@pytest.fixture(autouse=True)
def _forget_loaded() -> Iterator[None]:
    yield
    sys.modules.pop("ahead_mod", None)
    sys.path[:] = [p for p in sys.path if not p.startswith("/tmp/pytest")]


def test_the_code_compiled_ahead_runs_when_the_source_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "ahead_mod.py"
    path.write_text(MODULE)
    ahead = precompile(str(path))
    assert ahead is not None and ahead.path == str(path)
    # Code compiled from other text under the same source bytes: seeing it proves it was used.
    swapped = ahead._replace(code=compile(OTHER, str(path), "exec"))
    assert load_module("ahead_mod", path, swapped).WHO == "compiled ahead"


def test_a_source_changed_since_is_compiled_anew(tmp_path: Path) -> None:
    path = tmp_path / "ahead_mod.py"
    path.write_text(OTHER)
    ahead = precompile(str(path))
    assert ahead is not None
    path.write_text(MODULE)  # edited after the standby compiled it
    assert load_module("ahead_mod", path, ahead).WHO == "compiled now"


def test_nothing_is_compiled_ahead_for_broken_or_warning_source(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def initialize(:\n")
    warns = tmp_path / "warns.py"
    warns.write_text('PATTERN = "\\d"\n')  # an invalid escape: a warning at compile time
    assert precompile(str(broken)) is None  # the import itself reports it, as always
    assert precompile(str(warns)) is None  # and warns when it compiles, not before
    assert precompile(str(tmp_path / "missing.py")) is None
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text(MODULE)
    compiled = precompile(str(package))
    assert compiled is not None and compiled.path == str(package / "__init__.py")
