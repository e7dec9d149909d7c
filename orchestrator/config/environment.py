"""A module entry's own dependencies: `requirements:` (a list of requirement lines), the package
directory's `requirements.txt`, and `python:` (the interpreter its venv is built from)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestrator.config.errors import ConfigError
from orchestrator.config.validate import describe, expect_list, expect_str, item

REQUIREMENTS_FILE = "requirements.txt"
MAX_REQUIREMENT_LINES = 1000  # a requirements list longer than this is a mistake, not a project


def module_requirements(
    value: Any, file: str, where: str, path: Path, enabled: bool
) -> tuple[tuple[str, ...] | None, Path | None]:
    """The `requirements:` list (None when absent) and the package directory's requirements.txt
    (None when there is none). Both at once is refused: which one counts would be a guess."""
    found_file = path / REQUIREMENTS_FILE if path.is_dir() else None
    # Whatever it is (a pipe, a dangling link): it is read, and refused, when the module starts.
    if found_file is not None and not os.path.lexists(found_file):
        found_file = None
    if value is None:
        return None, found_file
    lines = expect_list(value, file, where)
    if len(lines) > MAX_REQUIREMENT_LINES:
        raise ConfigError(
            file, where, f"expected at most {MAX_REQUIREMENT_LINES} lines, got {len(lines)}"
        )
    checked: list[str] = []
    for index, line in enumerate(lines):
        text = expect_str(line, file, item(where, index), allow_empty=False)
        if "\n" in text or "\r" in text or "\0" in text:
            raise ConfigError(file, item(where, index), "expected one requirement line")
        if text.lstrip().startswith("-"):  # an option line: split as a shell would
            import shlex  # noqa: PLC0415  (only requirements with options need it)

            try:
                shlex.split(text)
            except ValueError as exc:
                # Quoted whole, never `repr`-escaped: the text may hold a secret with a quote in
                # it, which the scrubber must find as it is.
                raise ConfigError(
                    file, item(where, index), f"cannot split {describe(text)}: {exc}"
                ) from None
        checked.append(text.strip())
    if found_file is not None and enabled:
        raise ConfigError(
            file,
            where,
            # Not its path: one made from a `path:` with a secret in it would show a piece of it.
            f"the module's {REQUIREMENTS_FILE} exists too: keep the requirements in one place "
            "(the list or the file)",
        )
    return tuple(checked), None


def module_python(
    value: Any, file: str, where: str, modules_dir: Path, enabled: bool
) -> Path | None:
    """`python:`: a path (relative to the modules file's directory) or a command name on PATH,
    naming an existing executable. The module's venv is built from it."""
    if value is None:
        return None
    text = expect_str(value, file, where, allow_empty=False)
    if os.sep in text:
        path = modules_dir / Path(text).expanduser()  # an absolute one stays as it is
    else:
        import shutil  # noqa: PLC0415  (only modules with a venv of their own name a python)

        on_path = shutil.which(text)
        if on_path is None:
            if enabled:
                raise ConfigError(file, where, f"no {describe(text)} on PATH")
            return Path(text)
        path = Path(on_path)
    path = Path(os.path.abspath(path))  # not resolved: a symlink names the interpreter it is
    if enabled and not (path.is_file() and os.access(path, os.X_OK)):
        message = f"{path} is not an executable file"
        raise ConfigError(file, where, message, derived=(str(path), text))
    return path
