"""Hot reload's slow work, on a thread of its own so that the supervisor's loop never waits for it.

Scheduling a recursive watchdog watch walks the whole tree and adds an inotify watch for each
directory in it, on the thread that schedules it; unscheduling one removes them all. A module's
package may hold a vendored venv, a `node_modules` or a data directory: 30,000 directories take
seconds. So the loop only says which directories it wants watched (`want`), and this thread
schedules what is new, unschedules what is no longer wanted or was made anew (another inode at
the same path) and keeps every other watch as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WatchKey = tuple[Path, bool]
"""A watched directory and whether its tree is watched too."""


class WatchKeeper:
    """Keeps the observer's watches as the loop last asked, on its own (daemon) thread."""

    def __init__(self, observer: Any, handler: Any) -> None:
        self._observer = observer
        self._handler = handler
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
        self._thread = threading.Thread(target=self._run, name="hot-reload-watches", daemon=True)
        self._thread.start()

    def want(self, config_dir: Path, roots: frozenset[Path], target_dirs: frozenset[Path]) -> None:
        """Watch these from now on (returns at once; the thread does the work)."""
        with self._lock:
            self._config_dir, self._roots, self._target_dirs = config_dir, roots, target_dirs
            self._asked += 1
        self._kick.set()

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
                asked = self._asked
            if config_dir is not None:
                try:
                    self._apply(_wanted(config_dir, roots, targets))
                except Exception:  # a watcher that stops following is better than none
                    log.exception("hot reload: could not update the watches")
            with self._lock:
                self._applied = asked

    def _apply(self, wanted: dict[WatchKey, tuple[int, int]]) -> None:
        for key, (watch, made_on) in list(self._made.items()):
            if wanted.get(key) != made_on:  # not wanted any more, gone, or made anew
                del self._made[key]
                with contextlib.suppress(KeyError):
                    self._observer.unschedule(watch)
        for key, identity in wanted.items():
            if key in self._made:
                continue
            directory, recursive = key
            try:
                watch = self._observer.schedule(self._handler, str(directory), recursive=recursive)
            except OSError as exc:  # gone meanwhile, or out of inotify watches
                log.warning("hot reload: cannot watch %s: %s", directory, exc)
                continue
            self.schedules += 1
            self._made[key] = (watch, identity)


def _wanted(
    config_dir: Path, roots: frozenset[Path], target_dirs: frozenset[Path]
) -> dict[WatchKey, tuple[int, int]]:
    """The watches wanted and the (device, inode) of each directory now: the config directory
    alone; each package module's tree, or a file module's directory alone; and the directory of
    each config file's target that no other watch sees already (a second watch would only repeat
    its events)."""
    wanted: dict[WatchKey, tuple[int, int]] = {}

    def add(directory: Path, recursive: bool) -> None:
        identity = identity_of(directory)
        if identity is not None:
            wanted[(directory, recursive)] = identity

    add(config_dir, False)
    for root in roots:
        if identity_of(root) is not None:
            add(root, True)
        else:
            add(root.parent, False)
    for directory in target_dirs:
        if not _covered(directory, wanted):
            add(directory, False)
    return wanted


def _covered(directory: Path, wanted: Mapping[WatchKey, object]) -> bool:
    return (directory, False) in wanted or any(
        recursive and (directory == root or root in directory.parents) for root, recursive in wanted
    )


def identity_of(directory: Path) -> tuple[int, int] | None:
    """The (device, inode) of a directory, or None if it is not one."""
    try:
        found = os.stat(directory)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISDIR(found.st_mode) else None
