"""Which venv a module needs: its requirement lines, the interpreter it is built from, and the
cache key that names it.

The cache lives in the project, beside the config directory: `<project>/.orchestrator/venvs/`
(`<project>` is the config directory's parent, the modules' working directory), never inside a
module's directory. `<key>/` is a complete venv (it holds `READY_MARKER`: it is renamed into
place only once built); `<key>.<config>.log` is the installer's output of the last build that the
supervisor of config directory `<config>` ran (two supervisors of one project, whose config
directories differ, never write one log); `.build-<key>-<pid>/` is a build under way (or one a
killed supervisor left, removed by the next build of that key); `.<key>.lock` is what builders of
one key (of any supervisor) hold while one of them moves its venv into place.

The key hashes the requirement lines (comments and blank lines dropped), the interpreter (its
real path, size and modification time: an upgraded interpreter is a new key), what the SDK
brings (`sdk.SdkParts.fingerprint`) and, when a line names a local path, the directory such
paths are relative to. The contents behind a local path are not hashed: a changed local
package needs a new version (or a changed line) to be rebuilt.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import ModuleSpec
from orchestrator.venv.sdk import SdkParts

CACHE_DIR = Path(".orchestrator") / "venvs"
READY_MARKER = ".orchestrator-ready"
MAX_REQUIREMENTS_BYTES = 256 * 1024
_KEY_VERSION = "1"  # bump when the layout of a venv changes
_LOCAL_MARKS = ("./", "../", "/", "~", "file:", ".\\")


class PlanError(Exception):
    """The module's requirements cannot be read (a missing, unreadable or oversized file)."""


@dataclass(frozen=True)
class Plan:
    """One module's venv: where it is, what it holds, where its relative paths resolve."""

    key: str
    base_python: Path  # the interpreter the venv is built from
    lines: tuple[str, ...]  # the requirement lines, as hashed
    source: str  # where the lines come from, for messages: `.../requirements.txt`, `modules.yaml`
    requirements_file: Path | None  # handed to the installer as is (`-r` lines resolve beside it)
    cwd: Path  # where the installer runs: relative paths in the lines resolve here
    cache: Path
    config_name: str = "config"  # the supervisor's config directory's name: its own log

    @property
    def venv(self) -> Path:
        return self.cache / self.key

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def log(self) -> Path:
        return self.cache / f"{self.key}.{self.config_name}.log"

    def ready(self) -> bool:
        """The venv is complete: see `venv_ready`."""
        return venv_ready(self.venv)


def venv_ready(venv: Path) -> bool:
    """The one test of a usable venv, for the loop and the builder alike: it was renamed into
    place with its marker, and its interpreter is still there (a venv that lost `bin/python`
    keeps its marker, yet nothing can start on it: it is built again)."""
    return (venv / READY_MARKER).is_file() and (venv / "bin" / "python").exists()


def plan_for(spec: ModuleSpec, modules_file: Path, cache: Path, sdk: SdkParts) -> Plan:
    """The venv `spec` needs (the caller checks `spec.own_environment` first)."""
    base = spec.python if spec.python is not None else Path(sys.executable)
    if spec.requirements_file is not None:
        lines = _read(spec.requirements_file)
        source, cwd = str(spec.requirements_file), spec.requirements_file.parent
    else:
        lines = tuple(spec.requirements or ())
        source, cwd = f"{modules_file.name} requirements of {spec.name}", modules_file.parent
    lines = tuple(line for line in (_strip(raw) for raw in lines) if line)
    if spec.limits.user is not None:
        from orchestrator.venv.trust import check_trusted  # noqa: PLC0415  (`user:` only: shlex)

        check_trusted(spec, lines, cwd)
    try:
        real = os.path.realpath(base)
        found = os.stat(real)
    except OSError as exc:
        raise PlanError(f"python {base}: {exc.strerror or exc}") from None
    local = any(mark in line for line in lines for mark in _LOCAL_MARKS)
    identity = {
        "v": _KEY_VERSION,
        "python": [real, found.st_size, found.st_mtime_ns],
        "lines": lines,
        "cwd": str(cwd) if local else None,
        "file": str(spec.requirements_file) if local and spec.requirements_file else None,
        "sdk": sdk.fingerprint,
    }
    import hashlib  # noqa: PLC0415  (here: it loads OpenSSL, ~3.5 MB, into every supervisor)

    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    config_name = modules_file.parent.name or "config"
    return Plan(key, base, lines, source, spec.requirements_file, cwd, cache, config_name)


def _read(path: Path) -> tuple[str, ...]:
    """The file's lines; read on the supervisor's loop, so never from a pipe or a device (a
    FIFO would block the open until a writer came), and never more than a bounded size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise PlanError(f"{_shown(path)}: {getattr(exc, 'strerror', None) or exc}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PlanError(f"{path}: not a regular file")
        try:
            data = file.read(MAX_REQUIREMENTS_BYTES + 1)
        except OSError as exc:
            raise PlanError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_REQUIREMENTS_BYTES:
        raise PlanError(f"{path}: larger than {MAX_REQUIREMENTS_BYTES // 1024} KiB")
    try:
        return tuple(data.decode("utf-8").splitlines())
    except UnicodeDecodeError as exc:
        raise PlanError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None


def read_lines(path: Path) -> tuple[str, ...]:
    """The requirement lines of file `path`, comments and blank lines dropped (see `_read`)."""
    return tuple(line for line in (_strip(raw) for raw in _read(path)) if line)


def _shown(path: Path) -> str:
    """`path` for a message of one line."""
    return str(path).replace("\0", "\\0")


def _strip(line: str) -> str:
    """A requirement line without its comment (pip's rule: `#` at the start or after a space)."""
    line = line.strip()
    if line.startswith("#"):
        return ""
    cut = line.find(" #")
    return (line[:cut] if cut >= 0 else line).strip()
