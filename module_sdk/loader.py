"""Loading a user module from its path, and checking that it has the module interface."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any


class ModuleLoadError(Exception):
    """The module could not be imported, or lacks `initialize` / `shutdown`.

    `details` holds the traceback when the import itself raised.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


# What a module process imports under its own names: the standard library, the SDK and what it
# imports. A module imported under one of them would take that module's place in sys.modules:
# one named `zmq` went deaf at its first event, `email` broke smtplib, `json` every `import json`.
_TAKEN = frozenset(sys.stdlib_module_names) | {
    "module_sdk",
    "orchestrator",
    "broker",
    "zmq",
    "msgpack",
    "yaml",
    "psutil",
    "tenacity",
    "pybreaker",
}
PRIVATE_PREFIX = "orchestrator_module_"  # before the name of one named like one of those


def python_name(module_name: str) -> str:
    """The name the module is imported under (and its loggers' prefix): `mod-x` becomes `mod_x`;
    one named like a Python module of its process (`json`) gets `PRIVATE_PREFIX` before it."""
    name = re.sub(r"\W", "_", module_name)
    name = f"_{name}" if name[:1].isdigit() else name
    return PRIVATE_PREFIX + name if name in _TAKEN else name


class _CompiledAhead(importlib.machinery.SourceFileLoader):
    """A source file's loader that takes the code compiled ahead of time (by a standby: see
    module_sdk/standby.py) when the source it reads now is the very source that was compiled;
    else it compiles as usual. A valid `__pycache__` file is used first, as always."""

    def __init__(self, fullname: str, path: str, source: bytes, code: CodeType) -> None:
        super().__init__(fullname, path)
        self._ahead: tuple[bytes, CodeType] | None = (source, code)

    def source_to_code(self, data: Any, path: Any, *, _optimize: int = -1) -> CodeType:  # type: ignore[override]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and data == ahead[0] and _optimize == -1:
            return ahead[1]
        return super().source_to_code(data, path, _optimize=_optimize)


class _PastModuleDirectories:
    """A finder first on `sys.meta_path` that, on a thread inside `own_imports()` only, looks
    for top-level names on `sys.path` without the directories `load_module` put there; it finds
    nothing otherwise (nor what is not there: the usual finders look next)."""

    def __init__(self) -> None:
        self.directories: set[str] = set()
        self._inside = threading.local()

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        depth = getattr(self._inside, "depth", 0)
        self._inside.depth = depth + 1
        try:
            yield
        finally:
            self._inside.depth = depth

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None or not getattr(self._inside, "depth", 0):
            return None  # a submodule (found on its package's path), or not the SDK's import
        search = [
            entry
            for entry in sys.path
            if not isinstance(entry, str) or os.path.abspath(entry) not in self.directories
        ]
        return importlib.machinery.PathFinder.find_spec(fullname, search, target)


_PAST_MODULE_DIRECTORIES = _PastModuleDirectories()


def own_imports() -> contextlib.AbstractContextManager[None]:
    """What is imported within it, on this thread, is never a file beside a file module: the
    SDK imports `retry` and `circuit_breaker` (with tenacity, pybreaker and what they import) on
    first use, by which time the module's directory is first on `sys.path`, where a
    `tenacity.py` of the module's own would stand in for the real one."""
    return _PAST_MODULE_DIRECTORIES.inside()


def load_module(
    module_name: str, path: Path, ahead: tuple[str, bytes, CodeType] | None = None
) -> ModuleType:
    """Import the file or package at `path` and check its interface; raise ModuleLoadError.
    `ahead`: (file, source, code) compiled before (a standby's), used if the file's source is
    still that source."""
    if path.is_dir():
        init_file, search = path / "__init__.py", [str(path)]
    else:
        init_file, search = path, None
        sys.path.insert(0, str(path.parent))  # as `python file.py` would: sibling files import
        if not _PAST_MODULE_DIRECTORIES.directories:  # but not for the SDK: `own_imports()`
            sys.meta_path.insert(0, _PAST_MODULE_DIRECTORIES)
        _PAST_MODULE_DIRECTORIES.directories.add(os.path.abspath(path.parent))
    if not init_file.is_file():
        raise ModuleLoadError(f"no such file: {init_file}")
    name = python_name(module_name)
    loader = None
    if ahead is not None and ahead[0] == str(init_file):
        loader = _CompiledAhead(name, str(init_file), ahead[1], ahead[2])
    spec = importlib.util.spec_from_file_location(
        name, init_file, loader=loader, submodule_search_locations=search
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
