"""Loading a user module from its path, and checking that it has the module interface."""

from __future__ import annotations

import importlib.util
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType


class ModuleLoadError(Exception):
    """The module could not be imported, or lacks `initialize` / `shutdown`.

    `details` holds the traceback when the import itself raised.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def python_name(module_name: str) -> str:
    """The name the module is imported under (and its loggers' prefix): `mod-x` becomes `mod_x`."""
    name = re.sub(r"\W", "_", module_name)
    return f"_{name}" if name[:1].isdigit() else name


def load_module(module_name: str, path: Path) -> ModuleType:
    """Import the file or package at `path` and check its interface; raise ModuleLoadError."""
    if path.is_dir():
        init_file, search = path / "__init__.py", [str(path)]
    else:
        init_file, search = path, None
        sys.path.insert(0, str(path.parent))  # as `python file.py` would: sibling files import
    if not init_file.is_file():
        raise ModuleLoadError(f"no such file: {init_file}")
    name = python_name(module_name)
    spec = importlib.util.spec_from_file_location(
        name, init_file, submodule_search_locations=search
    )
    if spec is None or spec.loader is None:
        raise ModuleLoadError(f"cannot import {init_file}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise ModuleLoadError(
            f"importing {init_file} raised {type(exc).__name__}: {exc}", traceback.format_exc()
        ) from exc
    for function in ("initialize", "shutdown"):
        if not callable(getattr(module, function, None)):
            raise ModuleLoadError(f"{init_file} does not define {function}()")
    return module
