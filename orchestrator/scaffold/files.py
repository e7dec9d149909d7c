"""`FileSet`: text files written all or nothing.

Each file, or each new directory with everything under it, is first written under a hidden
temporary name beside its destination, then renamed into place; new things are moved in before
existing files are replaced. A failure removes whatever this write created, so a second try never
trips over the first one's leftovers; even a process killed half-way leaves at most hidden
`.*.tmp` names, which block nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path


class WriteError(Exception):
    """Writing failed; nothing this write created is left. The message names the path."""


@dataclass(frozen=True)
class _Unit:
    """One rename: a file, or a new directory holding files (its top-most missing ancestor)."""

    destination: Path
    staged: Path
    replaces: bool  # an existing file is replaced


class FileSet:
    """Files to write, by absolute path; `commit()` writes them all or none."""

    def __init__(self) -> None:
        self.files: dict[Path, str] = {}
        self._replaceable: set[Path] = set()

    def add(self, path: Path, text: str, *, replace: bool = False) -> None:
        """Plan `path` (made absolute) with `text` as its content; with `replace`, an existing
        file there is replaced (keeping its permission bits), otherwise it is an error."""
        absolute = Path(os.path.abspath(path))
        self.files[absolute] = text
        if replace:
            self._replaceable.add(absolute)

    def conflicts(self) -> list[Path]:
        """The planned paths that exist already (as anything, a dangling symlink too) and may
        not be replaced: `commit()` would fail on them."""
        return [p for p in self.files if p not in self._replaceable and os.path.lexists(p)]

    def commit(self) -> None:
        """Write every file; `WriteError` (and nothing written) if any of it fails, or if a file
        that may not be replaced exists, even one that appeared since `conflicts()` was asked.

        Once a file has been replaced, a later failure cannot bring it back; replacements
        therefore come last, after every new file and directory is in place.
        """
        try:
            units = self._stage()
        except OSError as exc:
            raise WriteError(f"{exc.filename}: {exc.strerror}") from None
        moved: list[_Unit] = []
        for unit in sorted(units, key=lambda u: u.replaces):  # new things first
            try:
                _move(unit)
            except OSError as exc:
                for staged in units:
                    _remove(staged.staged)
                for done in moved:
                    if not done.replaces:
                        _remove(done.destination)
                raise WriteError(f"{unit.destination}: {exc.strerror or exc}") from None
            moved.append(unit)

    def _stage(self) -> list[_Unit]:
        units: dict[Path, _Unit] = {}
        path = Path()
        try:
            for path, text in self.files.items():
                top = _top_missing(path.parent)
                if top is None:
                    replaces = os.path.lexists(path)
                    if replaces and path not in self._replaceable:
                        raise FileExistsError(errno.EEXIST, "exists already", str(path))
                    staged = _hidden(path)
                    _write(staged, text, like=path if replaces else None)
                    units[path] = _Unit(path, staged, replaces)
                    continue
                if top not in units:
                    staged = _hidden(top)
                    staged.mkdir()
                    units[top] = _Unit(top, staged, replaces=False)
                inside = units[top].staged / path.relative_to(top)
                inside.parent.mkdir(parents=True, exist_ok=True)
                _write(inside, text, like=None)
        except OSError as exc:
            for unit in units.values():
                _remove(unit.staged)
            # Name the file the user asked for, not its hidden temporary name.
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        return list(units.values())


def _top_missing(directory: Path) -> Path | None:
    """The top-most ancestor of `directory` (itself included) that does not exist, or None."""
    top = None
    while not os.path.lexists(directory):
        top, directory = directory, directory.parent
    return top


def _hidden(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _write(path: Path, text: str, like: Path | None) -> None:
    with path.open("x", encoding="utf-8") as file:  # the umask applies, as for any new file
        file.write(text)
    if like is not None:
        os.chmod(path, stat.S_IMODE(os.stat(like).st_mode))


def _move(unit: _Unit) -> None:
    if unit.replaces:
        os.replace(unit.staged, unit.destination)
    elif unit.staged.is_dir():
        # rename() would replace an empty directory that appeared meanwhile: refuse it instead.
        if os.path.lexists(unit.destination):
            raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(unit.destination))
        os.rename(unit.staged, unit.destination)
    else:
        try:
            os.link(unit.staged, unit.destination)  # fails if it exists now, unlike rename()
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links
            if os.path.lexists(unit.destination):
                raise FileExistsError(
                    errno.EEXIST, "appeared meanwhile", str(unit.destination)
                ) from None
            os.rename(unit.staged, unit.destination)
            return
        os.unlink(unit.staged)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
