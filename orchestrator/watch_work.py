"""Hot reload's slow work, on a thread of its own so that the supervisor's loop never waits for it.

Scheduling a recursive watchdog watch walks the whole tree and adds an inotify watch for each
directory in it, on the thread that schedules it; unscheduling one removes them all. A module's
package may hold a vendored venv, a `node_modules` or a data directory: 30,000 directories take
seconds. So the loop only says which directories it wants watched (`want`), and this thread
schedules what is new, unschedules what is no longer wanted or was made anew (another inode at
the same path) and keeps every other watch as it is.

Whether a module's files changed is told by their fingerprint, taken on this thread too (`look`):
walking such a tree takes as long.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.config.environment import REQUIREMENTS_FILE

log = logging.getLogger(__name__)

WatchKey = tuple[Path, bool]
"""A watched directory and whether its tree is watched too."""
Fingerprint = tuple[tuple[str, int, int, int], ...]
"""A module's `.py` and requirements files as (path, mtime, size, inode): equal means unchanged."""
FINGERPRINT_FILES = 2000  # a package's files looked at, at most: past that, always restart
LOOK_TRIES = 3  # walks of a tree whose directories vanish under it, before it is looked at later
LOOK_PAUSE = 0.05  # seconds between them


class Looked(NamedTuple):
    """A module's files as looked at on the keeper's thread."""

    name: str
    fingerprint: Fingerprint | None  # None: too many files to tell
    sure: bool  # False: its tree kept changing under the walk; look again later
    baseline: bool  # looked at as it began to be watched, not for a change


class WatchKeeper:
    """Keeps the observer's watches as the loop last asked, on its own (daemon) thread."""

    def __init__(
        self,
        observer: Any,
        handler: Any,
        wake: Callable[[], None],
        renewed: Callable[[Path], None],
    ) -> None:
        self._observer = observer
        self._handler = handler
        self._wake = wake  # wakes the loop (results are ready)
        self._renewed = renewed  # a module root's tree is watched anew (another directory)
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stopping = False
        # Set by the loop (under the lock): the config directory, the modules' roots and the
        # directories of the config files' targets.
        self._config_dir: Path | None = None
        self._roots: frozenset[Path] = frozenset()
        self._target_dirs: frozenset[Path] = frozenset()
        # This thread's alone: each watch made, with the (device, inode) it was made on.
        self._made: dict[WatchKey, tuple[Any, tuple[int, int]]] = {}
        self.schedules = 0  # watches scheduled so far (tests tell "nothing was made again" by it)
        self._asked = 0  # requests made (under the lock), and applied
        self._applied = 0
        self._looks: dict[str, tuple[Path, bool]] = {}  # name -> (path, baseline), under the lock
        self._looked: list[Looked] = []  # results for the loop, under the lock
        self._stale: set[Path] = set()  # roots whose tree is to be watched anew, under the lock
        self._gone: set[Path] = set()  # this thread's: roots whose tree watch is to be made anew
        self._thread = threading.Thread(target=self._run, name="hot-reload-watches", daemon=True)
        self._thread.start()

    def want(self, config_dir: Path, roots: frozenset[Path], target_dirs: frozenset[Path]) -> None:
        """Watch these from now on (returns at once; the thread does the work)."""
        with self._lock:
            self._config_dir, self._roots, self._target_dirs = config_dir, roots, target_dirs
            self._asked += 1
        self._kick.set()

    def look(self, paths: Mapping[str, Path], *, baseline: bool = False) -> None:
        """Take these modules' fingerprints; `results` has them once the loop is woken."""
        with self._lock:
            for name, path in paths.items():
                self._looks[name] = (path, baseline and self._looks.get(name, (path, True))[1])
            self._asked += 1
        self._kick.set()

    def renew(self, roots: set[Path]) -> None:
        """These module roots were made, moved or deleted (any thread): watch their trees anew.
        A watch follows its directory's inode, wherever it is moved: a deploy that renames the
        old package away and a new one in its place would keep the old one watched."""
        with self._lock:
            self._stale |= roots
            self._asked += 1
        self._kick.set()

    def results(self) -> list[Looked]:
        """The fingerprints taken since the last call."""
        with self._lock:
            found, self._looked = self._looked, []
        return found

    def idle(self) -> bool:
        """Whether every request so far has been applied."""
        with self._lock:
            return self._applied == self._asked

    def watched(self) -> set[WatchKey]:
        """The watches made (for tests and diagnostics)."""
        return set(self._made)

    def stop(self) -> None:
        """Ask the thread to end; it ends once a schedule under way is done."""
        with self._lock:
            self._stopping = True
        self._kick.set()

    def _run(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            with self._lock:
                if self._stopping:
                    return
                config_dir, roots, targets = self._config_dir, self._roots, self._target_dirs
                looks, self._looks = self._looks, {}
                stale, self._stale = self._stale, set()
                asked = self._asked
            if config_dir is not None:
                try:
                    self._apply(_wanted(config_dir, roots, targets), roots, stale)
                except Exception:  # a watcher that stops following is better than none
                    log.exception("hot reload: could not update the watches")
            # After the watches: a write after a baseline's look is seen by its watch.
            found = [_look(name, path, baseline) for name, (path, baseline) in looks.items()]
            with self._lock:
                self._looked += found
                self._applied = asked
            if found:
                self._wake()

    def _apply(
        self, wanted: dict[WatchKey, tuple[int, int]], roots: frozenset[Path], stale: set[Path]
    ) -> None:
        """Make the watches `wanted` and drop the others, keeping those that are as they were;
        the trees of `stale` roots are watched anew. A root's tree watched again after it was
        gone or made anew is looked at again (`renewed`): a write between the two is seen."""
        renewing: set[Path] = set()
        for key, (watch, made_on) in list(self._made.items()):
            directory, recursive = key
            if recursive and directory in stale:
                renewing.add(directory)
            elif wanted.get(key) == made_on:
                continue  # as it was
            elif key in wanted:  # another directory at the same path
                renewing.add(directory)
            del self._made[key]
            with contextlib.suppress(KeyError):
                self._observer.unschedule(watch)
        self._gone = (self._gone | renewing | stale) & roots
        for key, identity in wanted.items():
            if key in self._made:
                continue
            if self._stopping:  # closing: the observer waits for a schedule under way to end
                return
            directory, recursive = key
            try:
                watch = self._observer.schedule(self._handler, str(directory), recursive=recursive)
            except OSError as exc:  # gone meanwhile, or out of inotify watches
                log.warning("hot reload: cannot watch %s: %s", directory, exc)
                continue
            self.schedules += 1
            self._made[key] = (watch, identity)
            if recursive and directory in self._gone:
                self._gone.discard(directory)
                self._renewed(directory)  # what was written before this watch: look again


def _wanted(
    config_dir: Path, roots: frozenset[Path], target_dirs: frozenset[Path]
) -> dict[WatchKey, tuple[int, int]]:
    """The watches wanted and the (device, inode) of each directory now: the config directory
    alone; each package module's tree and the directory it is in, a file module's directory
    alone; and the directory of
    each config file's target that no other watch sees already (a second watch would only repeat
    its events)."""
    wanted: dict[WatchKey, tuple[int, int]] = {}

    def add(directory: Path, recursive: bool) -> None:
        identity = identity_of(directory)
        if identity is not None:
            wanted[(directory, recursive)] = identity

    add(config_dir, False)
    for root in roots:
        add(root.parent, False)  # the root itself renamed, deleted or made (a deploy's swap)
        if identity_of(root) is not None:
            add(root, True)
    for directory in target_dirs:
        if not _covered(directory, wanted):
            add(directory, False)
    return wanted


def _covered(directory: Path, wanted: Mapping[WatchKey, object]) -> bool:
    return (directory, False) in wanted or any(
        recursive and (directory == root or root in directory.parents) for root, recursive in wanted
    )


def _look(name: str, path: Path, baseline: bool) -> Looked:
    for attempt in range(LOOK_TRIES):
        if attempt:
            time.sleep(LOOK_PAUSE)
        try:
            return Looked(name, fingerprint(path), True, baseline)
        except _VanishedError:
            continue
        except Exception:
            log.exception("hot reload: could not look at %s", path)
            return Looked(name, None, True, baseline)
    return Looked(name, None, False, baseline)


class _VanishedError(Exception):
    """A directory or file the walk had found was gone when it got to it."""


def fingerprint(path: Path) -> Fingerprint | None:
    """The module's `.py` files and requirements files, a file module's or a package's (None
    when the package holds too many to tell); () when the module is gone. `__pycache__` is passed
    over, and so are links to directories (a loop) and what cannot be read (the same each time).
    Raises `_VanishedError` when something vanishes under the walk (a tree being deleted): that tells
    nothing yet, not even that the module changed."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return ()
    if not stat.S_ISDIR(found.st_mode):
        return ((str(path), found.st_mtime_ns, found.st_size, found.st_ino),)
    files: list[tuple[str, int, int, int]] = []
    directories = [str(path)]
    while directories:
        directory = directories.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.name != "__pycache__":
                            directories.append(entry.path)
                    elif entry.name.endswith(".py") or entry.name == REQUIREMENTS_FILE:
                        if len(files) == FINGERPRINT_FILES:
                            return None
                        seen = _stat(entry)
                        files.append((entry.path, seen.st_mtime_ns, seen.st_size, seen.st_ino))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise _VanishedError(directory) from exc
        except OSError:
            continue  # unreadable: nothing of it is seen, this time or the next
    return tuple(sorted(files))


def _stat(entry: os.DirEntry[str]) -> os.stat_result:
    """A file's status, or a dangling link's own (it is a state, not a vanishing)."""
    try:
        return entry.stat()
    except FileNotFoundError:
        if entry.is_symlink():
            return entry.stat(follow_symlinks=False)
        raise


def identity_of(directory: Path) -> tuple[int, int] | None:
    """The (device, inode) of a directory, or None if it is not one."""
    try:
        found = os.stat(directory)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None
