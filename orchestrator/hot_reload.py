"""Hot reload on the loop: a saved config is reloaded, a saved module is restarted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import zmq

from orchestrator.config import AppConfig
from orchestrator.instances import members
from orchestrator.manager import ChildManager
from orchestrator.reconcile import ReloadPlan
from orchestrator.watch import ChangeWatcher, ConfigState

log = logging.getLogger(__name__)


class HotReload:
    """The file watcher while `hot_reload` is on, and what its changes lead to."""

    def __init__(
        self,
        poller: zmq.Poller,
        manager: ChildManager,
        reload: Callable[[], ReloadPlan | None],
    ) -> None:
        self.watcher: ChangeWatcher | None = None
        self._poller = poller
        self._manager = manager
        self._reload = reload
        # What each module's files were when a change last restarted it: a late event of the
        # same writes (the watcher's thread starved under load past the quiet period) is not
        # a second restart.
        self._restarted_at: dict[str, tuple[tuple[str, int, int], ...] | None] = {}
        self.rejected = False  # the last reload was refused (set by the supervisor's reload)

    def next_deadline(self) -> float | None:
        """When the debounced changes are due, if any are pending."""
        return self.watcher.next_deadline() if self.watcher is not None else None

    def handle(self, ready: dict[Any, int]) -> None:
        """Act on the changes that are due: reload a changed config, restart a changed module
        that the reload did not already restart or start."""
        if self.watcher is None:
            return
        now = time.monotonic()
        if self.watcher.read_fd in ready:
            self.watcher.wake(now)
        changed, config_changed = self.watcher.due(now)
        handled: set[str] = set()
        manager = self._manager
        # An event names a config file, a link's target or a renamed link; only a content that
        # differs from what the last reload read is a change (a ConfigMap swap of the same data
        # is not). After a rejected reload any save is tried again: the cause may have been
        # outside these files (a module file not yet written), fixed since.
        if config_changed and (
            self.watcher.config_state() != self.watcher.last_read or self.rejected
        ):
            log.info("hot reload: the config changed")
            plan = self._reload()
            if plan is not None:  # its restarts and starts run the saved code already
                handled = {*plan.start, *plan.stop, *plan.restart}
        for name in changed:
            spec = manager.config.module(name)
            seen = fingerprint(spec.path) if spec is not None else None
            if seen is not None and self._restarted_at.get(name) == seen:
                continue  # a late event of writes whose restart is under way already
            self._restarted_at[name] = seen
            for child in members(manager.children, name):  # a module's instances, each
                if child.name not in handled and not manager.shutting_down:
                    log.info("hot reload: %s changed; restarting it", child.name)
                    manager.restart_changed(child)

    def configure(self, config: AppConfig) -> None:
        """Start, retarget or stop the file watcher to match `hot_reload` and the modules."""
        modules = {spec.name: spec.path for spec in config.enabled_modules}
        if config.hot_reload and self.watcher is None:
            self.watcher = ChangeWatcher(config.config_dir, modules)
            self._poller.register(self.watcher.read_fd, zmq.POLLIN)
            log.info("hot reload on: watching %d modules and the config", len(modules))
        elif config.hot_reload and self.watcher is not None:
            self.watcher.watch(modules)
        elif self.watcher is not None:
            self._poller.unregister(self.watcher.read_fd)
            self.close()
            log.info("hot reload off")

    def config_state(self) -> ConfigState | None:
        """What the config files hold, to be taken before a reload reads them (None while hot
        reload is off)."""
        return self.watcher.config_state() if self.watcher is not None else None

    def config_read(self, state: ConfigState | None) -> None:
        """A reload read the config that `state` was taken of (and applied or rejected it):
        changes are told from it."""
        if self.watcher is not None and state is not None:
            self.watcher.last_read = state

    def close(self) -> None:
        """Stop watching."""
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None


_FINGERPRINT_FILES = 2000  # a package's files looked at, at most: past that, always restart


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...] | None:
    """The module's `.py` files as (name, mtime, size): a file module, or a package's (None when
    it cannot be read, or is too large to tell)."""
    try:
        # Looked at on the loop: a huge package is not walked whole (past the bound: None).
        found = islice(path.rglob("*.py"), _FINGERPRINT_FILES + 1) if path.is_dir() else [path]
        files = sorted(found)
        if len(files) > _FINGERPRINT_FILES:
            return None
        return tuple((str(f), (s := f.stat()).st_mtime_ns, s.st_size) for f in files)
    except OSError:
        return None
