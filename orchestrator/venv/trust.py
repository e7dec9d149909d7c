"""The requirements of a module that runs as another user (`user:`): what the supervisor may
install for it.

The supervisor (root) builds that module's venv: a package's setup.py runs with its
privileges, and the installer's errors reach status. So the module's user must not choose what
is installed, nor read through the installer's errors a file it could not read itself
(`-r /etc/shadow`). Every requirement file (the module's own, and each one that a file includes
with `-r`/`-c`) must therefore be, like sshd's StrictModes (`secure_path`):

- reached only through directories that no one else can change: every directory looked up on
  the way from `/`, symbolic links followed (the directory a link is in, and those of its
  target), owned by root or the supervisor's user and writable by no group or other; a sticky
  directory that others may write (`/tmp`) may be passed through, but is never the file's own,
  and a link found in one must be owned by root or the supervisor's user;
- owned by root or the supervisor's user, writable by no one else, a regular file;
- readable by the module's user.

Then nothing but root and the supervisor's user can change what the installer reads between
this check and the build: no copy of the checked contents needs to be handed to the builder.

Local paths in the lines (`./pkg`, `-e ./src`, `file:`, `--find-links DIR`, a directory or an
archive) are refused for such a module: what a path names (a source tree, a directory of
wheels) is a whole tree that the installer would run or unpack as root.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections import deque
from pathlib import Path
from typing import Any

from orchestrator.config import ModuleSpec
from orchestrator.venv.plan import PlanError, read_lines

_INCLUDES = ("-r", "--requirement", "-c", "--constraint")
_LOCATIONS = ("-f", "--find-links", "-e", "--editable", "-i", "--index-url", "--extra-index-url")
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_MAX_INCLUDED = 32
_MAX_LINKS = 40  # symbolic links followed for one path (the kernel's limit)


def check_trusted(spec: ModuleSpec, lines: tuple[str, ...], cwd: Path) -> None:
    """Refuse (PlanError, one line naming the file and the rule) requirements of `spec`, which
    runs as another user, that its user could have chosen; see the module's docstring."""
    from orchestrator.isolation import ids  # noqa: PLC0415  (only for `user:` modules)

    try:
        who = ids(spec.limits)
    except OSError as exc:
        raise PlanError(f"user {spec.limits.user}: {exc.strerror or exc}") from None
    if who["uid"] == os.geteuid():
        return  # no other user: nothing to guard
    user = spec.limits.user or ""
    # First in, first checked: a file is refused before anything it names is looked at (an
    # untrusted file must not learn, through status, whether the paths it names exist).
    top = spec.requirements_file
    pending: deque[tuple[Path | None, tuple[str, ...] | None, Path]] = deque([(top, lines, cwd)])
    seen: set[str] = set()
    while pending:
        path, known, base = pending.popleft()
        if path is not None:
            if str(path) in seen:
                continue
            seen.add(str(path))
            if len(seen) > _MAX_INCLUDED:
                raise PlanError(f"{path}: more than {_MAX_INCLUDED} requirement files included")
            _trusted(path, user, who)
        if known is None and path is not None:  # an included file: what it includes in turn
            known = read_lines(path)
        where = str(path) if path is not None else f"requirements of {spec.name}"
        names = _included(known or (), where, user)
        pending += [(base / name, None, (base / name).parent) for name in names]


def _trusted(path: Path, user: str, who: dict[str, Any]) -> None:
    """Refuse `path` (see the module's docstring) with one line that names it."""
    rule = (
        f"refused for a module that runs as {user}: its requirement files must be owned by root "
        "or the supervisor's user, writable by no one else, reached only through directories no "
        "one else can change, and readable by it"
    )
    shown = str(path).replace("\0", "\\0")
    try:
        real = _safe_path(path, rule)
        found = os.lstat(real)
    except PlanError as exc:  # names what on the way to it is refused
        raise PlanError(f"{shown}: {exc}") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise PlanError(f"{shown}: {getattr(exc, 'strerror', None) or exc}") from None
    if not stat.S_ISREG(found.st_mode):
        raise PlanError(f"{path}: not a regular file; {rule}")
    _owned(path, found, rule, sticky_ok=False)
    if found.st_uid == who["uid"]:
        readable = found.st_mode & 0o400
    elif found.st_gid in who["groups"] or found.st_gid == who["gid"]:
        readable = found.st_mode & 0o040
    else:
        readable = found.st_mode & 0o004
    if not readable:
        raise PlanError(f"{path}: not readable by {user}; {rule}")


def _safe_path(path: Path, rule: str) -> str:
    """`path` resolved as the kernel would (links followed), refusing it when any directory
    looked up on the way, or a link in a sticky one, could be changed by someone other than
    root or the supervisor's user; the resolved path."""
    parts = deque(Path(os.path.abspath(path)).parts[1:])
    current, links = "/", 0
    _owned(Path("/"), os.stat("/"), rule, sticky_ok=True)
    while parts:
        name = parts.popleft()
        if name == "..":  # its parent was checked on the way down
            current = os.path.dirname(current)
            continue
        if name in ("", "."):
            continue
        entry = os.path.join(current, name)
        found = os.lstat(entry)
        if stat.S_ISLNK(found.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise PlanError("too many levels of symbolic links")
            if os.stat(current).st_mode & stat.S_ISVTX:  # others may own entries there
                _owned(Path(entry), found, rule, sticky_ok=True, mode=False)
            target = os.readlink(entry)
            if os.path.isabs(target):
                current = "/"  # checked already
            parts.extendleft(reversed(Path(target).parts[1 if os.path.isabs(target) else 0 :]))
            continue
        if parts:  # a directory on the way
            if not stat.S_ISDIR(found.st_mode):
                raise PlanError(f"{entry}: not a directory")
            _owned(Path(entry), found, rule, sticky_ok=True)
        current = entry
    # The file's own directory: where it could be replaced, sticky or not.
    own = os.path.dirname(current)
    _owned(Path(own), os.stat(own), rule, sticky_ok=False)
    return current


def _owned(
    what: Path, found: os.stat_result, rule: str, *, sticky_ok: bool, mode: bool = True
) -> None:
    if found.st_uid not in (0, os.geteuid()):
        raise PlanError(f"{what}: owned by uid {found.st_uid}; {rule}")
    if not mode or not found.st_mode & 0o022:
        return
    if sticky_ok and stat.S_ISDIR(found.st_mode) and found.st_mode & stat.S_ISVTX:
        return  # others may add entries, not replace ours
    raise PlanError(f"{what}: writable by group or others; {rule}")


def _included(lines: tuple[str, ...], where: str, user: str) -> list[str]:
    """The files that option lines (of `where`) include (`-r F`, `--requirement=F`, `-cF`,
    ...); a line that names a local path to install from is refused (see the module's
    docstring), as is a name with a NUL in it. A URL is fetched by the installer: nothing here
    to check."""
    found: list[str] = []
    for line in lines:
        if not line.startswith("-"):
            if _local(line.split(";", 1)[0].strip()):
                raise PlanError(f"{where}: {line!r}: {_local_rule(user)}")
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            continue  # the installer says what is wrong with it
        for option, value in _options(words):
            if option in _INCLUDES:
                if "\0" in value:  # no file has such a name; the system calls would refuse it
                    raise PlanError(f"{where}: a NUL character in the name of a file it includes")
                if value and "://" not in value:
                    found.append(value)
            elif option in _LOCATIONS and (_local(value) or "://" not in value):
                raise PlanError(f"{where}: {line!r}: {_local_rule(user)}")
    return found


def _options(words: list[str]) -> list[tuple[str, str]]:
    """(option, value) of each option that takes one: `-r F`, `--requirement=F`, `-rF`."""
    found: list[tuple[str, str]] = []
    for i, word in enumerate(words):
        for option in (*_INCLUDES, *_LOCATIONS):
            if word == option:
                found.append((option, words[i + 1] if i + 1 < len(words) else ""))
            elif option.startswith("--") and word.startswith(f"{option}="):
                found.append((option, word.split("=", 1)[1]))
            elif not option.startswith("--") and word.startswith(option) and word != option:
                if not word.startswith("--"):
                    found.append((option, word[len(option) :]))
    return found


def _local(requirement: str) -> bool:
    """Whether a requirement (not an option) names a local path or file URL: `./pkg`, `/x`,
    `~/x`, `pkg.whl`, `name @ file:///x`, `git+file:///x`."""
    if "file:" in requirement:
        return True
    if requirement.startswith((".", "/", "~", "\\")):
        return True
    first = requirement.split()[0] if requirement.split() else ""
    if "://" in first:
        return False
    return "/" in first or first.lower().endswith(_ARCHIVES)


def _local_rule(user: str) -> str:
    return (
        f"a local path is refused for a module that runs as {user} (what it names is built as "
        "the supervisor's user): install it from an index, or run the module without `user:`"
    )
