"""Hot reload on the loop: a saved config is reloaded, a saved module is restarted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from orchestrator.config import AppConfig
from orchestrator.instances import members
from orchestrator.manager import ChildManager
from orchestrator.reconcile import ReloadPlan
from orchestrator.watch import ChangeWatcher, ConfigState
from orchestrator.watch_work import Fingerprint, Looked

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
        # What each module's files were when a change last restarted it, or when it began to be
        # watched: a late event of the same writes (the watcher's thread starved under load past
        # the quiet period), or the kernel's "events lost", restarts nothing that is as it was.
        self._restarted_at: dict[str, Fingerprint | None] = {}
        self._paths: dict[str, Path] = {}  # each module's path, as watched
        # The modules being looked at (off the loop) for a change, each with the children that
        # the config's reload restarted or started with the saved code already.
        self._looking: dict[str, frozenset[str]] = {}
        self._baseline_asked: dict[str, float] = {}  # when each module's baseline look was asked
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
        for looked in self.watcher.looked():
            self._looked(looked)
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
        looks: dict[str, Path] = {}
        for name in changed:
            spec = manager.config.module(name)
            if spec is not None:  # its files are looked at off the loop: a tree may be large
                looks[name] = spec.path
                self._looking[name] = frozenset(handled)
        if looks:
            self.watcher.look(looks)

    def _looked(self, looked: Looked) -> None:
        """A module's files were looked at: restart it if they differ from what it runs."""
        name, seen = looked.name, looked.fingerprint
        if looked.baseline:
            asked = self._baseline_asked.pop(name, None)
            # A save while the walk went on may be in what it saw (a large tree takes seconds):
            # then it is no baseline, or that save's own look would find nothing changed.
            saved = (
                asked is not None
                and self.watcher is not None
                and self.watcher.marked_since(name, asked)
            )
            if looked.sure and not saved:
                self._restarted_at.setdefault(name, seen)
            return
        if not looked.sure:  # its tree changed under the walk (a tree being deleted): not yet
            if self.watcher is not None:
                self.watcher.again(name)
            return
        handled = self._looking.pop(name, frozenset())
        if seen is not None and self._restarted_at.get(name) == seen:
            return  # as it was: a late event of writes whose restart is under way, or none
        self._restarted_at[name] = seen
        manager = self._manager
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
        if self.watcher is not None:  # what the files of the modules newly watched are now
            fresh = {name: path for name, path in modules.items() if self._paths.get(name) != path}
            for name in fresh:
                self._restarted_at.pop(name, None)
            self._paths = modules
            if fresh:
                self._baseline_asked.update(dict.fromkeys(fresh, time.monotonic()))
                self.watcher.look(fresh, baseline=True)

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
        self._restarted_at, self._paths, self._looking = {}, {}, {}
        self._baseline_asked = {}
