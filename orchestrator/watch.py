"""Hot reload: watchdog watches each module's code and the config files, and wakes the loop.

The watchdog observer runs on its own thread; its handler only records what changed and writes a
byte to a pipe that the supervisor's poller watches, so every decision stays on the loop.

A config file may be a symbolic link (a Kubernetes ConfigMap: `main.yaml -> ..data/main.yaml`,
`..data -> ..2024_a`, swapped by renaming a new `..data` over it): the directory of each file's
resolved target is watched as well, and so is the rename of any link in the config directory.
Whether the config changed is then told by its content (`config_state`), not by the event.

A package module's tree is watched, and so is the directory it is in (alone): a deploy that
renames the old package away and a new one in its place (`mv pkg pkg.old; mv pkg.new pkg`) is
a change of the module, and its tree is watched anew (a watch follows its directory's inode).
The watches are made on the keeper's thread (`watch_work`): watching a large tree takes seconds.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import stat
import sys
import threading
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.config.environment import REQUIREMENTS_FILE
from orchestrator.config.yamlfile import MAX_BYTES
from orchestrator.watch_work import Looked, WatchKeeper

CONFIG_FILES = ("main.yaml", "modules.yaml", ".env")
ConfigState = tuple[object, ...]
"""What the config files hold, one entry each (see `config_state`): equal means unchanged."""
DEBOUNCE = 0.05  # seconds of quiet after the last write before acting: an editor's save is a burst
MAX_DELAY = 1.0  # but act at most this long after the first write, however busy the files stay
_CONFIG = ""  # the pending key for a config change (no module is called "")
_WRITES = {"created", "modified", "moved", "deleted", "closed"}  # not "opened", "closed_no_write"
_DIRECTORY_CHANGES = {"created", "moved", "deleted"}  # not "modified": any file made in it


def _observer_class() -> Any:
    """watchdog's Observer, imported here: only a supervisor with hot_reload on pays for it.

    Its inotify module imports `ctypes.util` (which imports shutil, tempfile, bz2 and lzma: 0.7 MB
    resident) and never uses it, opening libc with `CDLL(None)`. It is imported with a stand-in
    for `ctypes.util` that imports the real one the first time anything asks it for anything.
    """
    if "ctypes.util" in sys.modules:
        from watchdog.observers import Observer  # noqa: PLC0415

        return Observer
    import ctypes  # noqa: PLC0415

    stand_in = types.ModuleType("ctypes.util")

    def real(name: str) -> Any:
        if sys.modules.get("ctypes.util") is stand_in:
            del sys.modules["ctypes.util"]
        return getattr(importlib.import_module("ctypes.util"), name)

    stand_in.__getattr__ = real  # type: ignore[method-assign]  # PEP 562: on first use
    sys.modules["ctypes.util"] = stand_in
    ctypes.util = stand_in  # type: ignore[attr-defined]
    try:
        from watchdog.observers import Observer  # noqa: PLC0415
    finally:
        if sys.modules.get("ctypes.util") is stand_in:  # later imports get the real one
            del sys.modules["ctypes.util"]
    return Observer


class ChangeWatcher:
    """Watches `modules` (name -> the module's file or package directory) and `config_dir`."""

    def __init__(self, config_dir: Path, modules: Mapping[str, Path]) -> None:
        Observer = _observer_class()  # noqa: N806  (a class)
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._changed: set[str] = set()  # written by the observer thread, under the lock
        self._marked_at: dict[str, float] = {}  # when each was last marked changed, under the lock
        # Loop only: what changed (module names, or _CONFIG), when the first of it came, and
        # when to act on all of it.
        self._pending: set[str] = set()
        self._batch_since = 0.0
        self._due_at: float | None = None
        self._config_dir = config_dir.resolve()
        self._roots: dict[Path, str] = {}
        # The config files' resolved targets outside the config directory (read by the observer
        # thread: replaced whole, never changed in place).
        self._targets: frozenset[Path] = frozenset()
        self._observer: Any = Observer()
        self._observer.daemon = True
        self._handler = _Handler(self)
        self._observer.start()
        self._keeper = WatchKeeper(self._observer, self._handler, self._poke, self._renewed)
        self.watch(modules)
        self.last_read: ConfigState = self._contents()
        """The config files as the last reload read them, applied or rejected (the caller updates
        it): the same content again asks for no reload, and a save that undoes a rejected one
        does (it clears the rejection)."""

    def watch(self, modules: Mapping[str, Path]) -> None:
        """Watch exactly these modules (and the config directory) from now on. Returns at once:
        the watches are made on the keeper's thread, and only those that differ from what is
        watched already (a tree of thousands of directories takes seconds to watch)."""
        self._roots = {path.resolve(): name for name, path in modules.items()}
        self._follow_targets()

    def config_state(self) -> ConfigState:
        """What the config files hold now, after following their links anew (and moving the
        watches of their targets' directories to match): compared with `last_read`, it tells a
        config that changed from a touch, a save of the same text or a ConfigMap update that
        changed nothing."""
        self._follow_targets()
        return self._contents()

    def wake(self, now: float) -> None:
        """Called when `read_fd` is readable: (re)start the quiet period. It is one for all the
        watched files, so that what is saved together (code and config, a checkout) is acted on
        together."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.read_fd, 4096):
                pass
        with self._lock:
            changed, self._changed = self._changed, set()
        if changed:
            if not self._pending:
                self._batch_since = now
            self._pending |= changed
            self._due_at = min(now + DEBOUNCE, self._batch_since + MAX_DELAY)

    def next_deadline(self) -> float | None:
        """When the pending changes are due, if there are any."""
        return self._due_at

    def due(self, now: float) -> tuple[list[str], bool]:
        """The modules whose code changed and whether the config changed, once quiet for long
        enough; each is returned once."""
        if self._due_at is None or now < self._due_at:
            return [], False
        ready, self._pending, self._due_at = self._pending, set(), None
        return sorted(ready - {_CONFIG}), _CONFIG in ready

    def close(self) -> None:
        """Stop the keeper's and the observer's threads and close the pipe."""
        self._keeper.stop()
        self._observer.stop()
        self._observer.join(2.0)
        with self._lock:
            os.close(self.read_fd)
            os.close(self._write_fd)
            self._write_fd = -1

    def record(self, path: str) -> None:
        """Note a written path (called on the observer's thread) and wake the loop if it counts."""
        file = Path(path)
        if self._is_config(file):
            owner: str | None = _CONFIG
        elif (
            file.suffix == ".py" or file.name == REQUIREMENTS_FILE
        ) and "__pycache__" not in file.parts:
            owner = self._owner(file)
        else:
            owner = None
        if owner is not None:
            self._mark({owner})

    def directory_event(self, path: str) -> None:
        """A directory was made, deleted or renamed (called on the observer's thread): if it is a
        module's root or a directory above one, the module changed (a deploy that renames a new
        package over the old one), and its tree is watched anew. Any other (the churn of a
        directory next to it, a data tree in it) is nothing."""
        directory = Path(path)
        hit = {root for root in self._roots if directory == root or directory in root.parents}
        if hit:
            self._mark({self._roots[root] for root in hit})
            self._keeper.renew(hit)

    def lost(self) -> None:
        """The kernel dropped events (inotify's queue overflowed in a storm of writes): take
        every module and the config as changed. Modules whose files are as they were are not
        restarted (hot_reload compares their fingerprints), nor is a config that holds what it
        held (`config_state`)."""
        self._mark({_CONFIG, *self._roots.values()})

    def look(self, paths: Mapping[str, Path], *, baseline: bool = False) -> None:
        """Have these modules' files looked at off the loop (a package may hold a large tree);
        `looked` returns what was found once the loop is woken. A `baseline` look is the files
        as they were when the module began to be watched, not a change."""
        self._keeper.look(paths, baseline=baseline)

    def looked(self) -> list[Looked]:
        """The looks done since the last call."""
        return self._keeper.results()

    def again(self, name: str) -> None:
        """Take the module as changed once more (its look found its tree changing under it):
        it is looked at again after the quiet period."""
        self._mark({name})

    def _renewed(self, root: Path) -> None:
        """The root's tree is watched anew (the keeper's thread): what was written to it before
        is looked at."""
        name = self._roots.get(root)
        if name is not None:
            self._mark({name})

    def _mark(self, changed: set[str]) -> None:
        """Note what changed and wake the loop (any thread)."""
        now = time.monotonic()
        with self._lock:
            self._changed |= changed
            self._marked_at.update(dict.fromkeys(changed, now))
        self._poke()

    def marked_since(self, name: str, since: float) -> bool:
        """Whether `name` was taken as changed at `since` (a `time.monotonic()`) or after."""
        with self._lock:
            return self._marked_at.get(name, -math.inf) >= since

    def _poke(self) -> None:
        with self._lock:  # not once closed: the number may be another file's by then
            if self._write_fd >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._write_fd, b"!")

    def _is_config(self, file: Path) -> bool:
        """A config file, its link's target, or a link renamed or made in the config directory
        (a ConfigMap's `..data`: the files' links go through it)."""
        if file.parent == self._config_dir:
            return file.name in CONFIG_FILES or os.path.islink(file)
        return file in self._targets

    def _follow_targets(self) -> None:
        """Resolve the config files' links and have the directories of their targets watched
        (each one alone, not its tree), along with the modules and the config directory."""
        targets = {Path(os.path.realpath(self._config_dir / name)) for name in CONFIG_FILES}
        self._targets = frozenset(t for t in targets if t.parent != self._config_dir)
        target_dirs = frozenset(t.parent for t in self._targets)
        self._keeper.want(self._config_dir, frozenset(self._roots), target_dirs)

    def _contents(self) -> ConfigState:
        return tuple(_content(self._config_dir / name) for name in CONFIG_FILES)

    def _owner(self, file: Path) -> str | None:
        for root, name in self._roots.items():
            if file == root or root in file.parents:
                return name
        return None


def _content(path: Path) -> object:
    """What a config file holds, as compactly as can be compared: its size and a hash of its
    bytes (Python's own hash, salted per process: nothing outside this process sees it, and
    hashlib would load OpenSSL). None if it is missing; a mark of the error if it cannot be read.
    A FIFO or a device in its place is opened without blocking and not read: that could block.
    Never raises: it runs on the supervisor's loop, on whatever a deploy put in the file's place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return ("unreadable", exc.errno)
    try:  # the type is told before `fdopen`, which raises for a directory (a docker -v mount)
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            return ("not a regular file", stat.S_IFMT(found.st_mode))
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_BYTES + 1)  # the loader refuses a larger file unread, too
    except OSError as exc:
        return ("unreadable", exc.errno)
    finally:
        os.close(fd)
    return (found.st_size, hash(data))


class _Handler:
    """A watchdog event handler (duck-typed: watchdog only calls `dispatch`)."""

    def __init__(self, watcher: ChangeWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        if event.event_type == "events_lost":
            self._watcher.lost()
            return
        if event.is_directory:
            if event.event_type in _DIRECTORY_CHANGES:
                for path in (event.src_path, getattr(event, "dest_path", "")):
                    if path:
                        self._watcher.directory_event(os.fsdecode(path))
            return
        if event.event_type not in _WRITES:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._watcher.record(os.fsdecode(path))
