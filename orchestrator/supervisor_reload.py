"""`reload`: the supervisor re-reads its config and applies only the difference (a part of
`Supervisor`, whose state it uses): the modules' plan to the `ChildManager`, new webhooks,
limits, hot reload and the cluster bridge. An invalid config changes nothing."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from orchestrator.config import AppConfig, ConfigError, Redactor, load_config
from orchestrator.config.loader import read_yaml
from orchestrator.config.yamlfile import load_yaml, read_text
from orchestrator.hot_reload import HotReload
from orchestrator.manager import ChildManager
from orchestrator.notify import WebhookNotifier
from orchestrator.project_lock import ProjectLock
from orchestrator.reconcile import ReloadPlan, plan_reload
from orchestrator.resources import machine_limits

log = logging.getLogger(__name__)


_EMPTIED = (
    "it lists no modules (caught while being saved?), which would stop every module; "
    "write `modules: []` to run none"
)


_MAIN_EMPTIED = (
    "it holds nothing (caught while being saved?), which would set every setting back to its "
    "default; write `{}` for that"
)


def _says_nothing(path: Path) -> bool:
    """Whether `path` holds no YAML document at all (blank, comments alone): what a save that
    truncates, then writes, shows for a moment. A missing main.yaml, or `{}`, says "defaults"."""
    try:
        return load_yaml(read_text(path)) is None
    except (OSError, ValueError, yaml.YAMLError):  # missing, unreadable, invalid: not that
        return False


def _main_of(config: AppConfig) -> tuple[object, ...]:
    """What main.yaml sets."""
    return (
        config.app,
        config.resources,
        config.logging,
        config.error_handling,
        config.supervision,
        config.bus,
        config.notifications,
        config.hot_reload,
        config.metrics,
        config.cluster,
    )


def _lists_none(path: Path) -> bool:
    """Whether `path` says `modules: []` in so many words: a save caught halfway shows an empty
    file, comments alone, or `modules:` with nothing after it."""
    try:
        return isinstance(read_yaml(path, str(path)).get("modules"), list)
    except ConfigError:
        return False


class ConfigReload:
    """The reload of `Supervisor`."""

    config: AppConfig
    redactor: Redactor
    manager: ChildManager
    notifier: WebhookNotifier
    hot_reload: HotReload
    rejected_config: tuple[str, float] | None  # the last invalid config's error, and since when
    project_lock: ProjectLock | None
    _retired: list[WebhookNotifier]  # replaced by a reload, still delivering

    if TYPE_CHECKING:

        def _notifier(
            self, config: AppConfig, previous: WebhookNotifier | None = None
        ) -> WebhookNotifier: ...
        def _set_bridge(self) -> None: ...

    def reload(self, *, dry_run: bool) -> tuple[ReloadPlan | None, str]:
        """Re-read the config and apply only the difference; (None, error) if the new config is
        invalid, in which case nothing changes."""
        seen = self.hot_reload.config_state()  # before reading: a save meanwhile is seen again
        try:
            new = load_config(self.config.config_dir)
            if not new.modules and self.manager.config.modules:  # every module would stop
                if not _lists_none(new.modules_file):  # read again: a save may have finished
                    new = load_config(self.config.config_dir)
                if not new.modules and not _lists_none(new.modules_file):
                    raise ConfigError(str(new.modules_file), "", _EMPTIED)
            if _main_of(new) != _main_of(self.manager.config) and _says_nothing(new.main_file):
                new = load_config(self.config.config_dir)  # read again: a save may have finished
                if _main_of(new) != _main_of(self.manager.config) and _says_nothing(new.main_file):
                    raise ConfigError(str(new.main_file), "", _MAIN_EMPTIED)
        except Exception as exc:  # no config may end the supervisor
            if isinstance(exc, ConfigError):
                message = self.redactor.scrub(str(exc))
            else:  # a defect of ours in reading some value: the config is refused all the same
                # Where, not what: its text may hold a new secret the redactor does not know.
                where = traceback.extract_tb(exc.__traceback__)[-1]
                message = (
                    f"cannot read the config ({type(exc).__name__} at"
                    f" {Path(where.filename).name}:{where.lineno}; please report it)"
                )
            log.error("config reload rejected, keeping the running config: %s", message)
            if not dry_run:
                since = self.rejected_config[1] if self.rejected_config else time.time()
                self.rejected_config = (" ".join(message.split()), since)
                self.hot_reload.config_read(seen)
                self.hot_reload.rejected = True  # any save tries again (see HotReload.handle)
            return None, message
        # Before anything below logs a name or a value of the new config, dry runs included.
        self.redactor.add(new.secrets)
        plan = plan_reload(self.manager.config, new)  # in force: with a `scale` applied
        if self.manager.shutting_down:
            return None, "the supervisor is shutting down; nothing was changed"
        if dry_run:
            return plan, ""
        self.rejected_config = None
        self.hot_reload.rejected = False
        for section in plan.not_applied:
            log.warning("reload: %s changed; it applies at the next `up`", section)
        if plan.empty:
            log.info("reload: no module changed")
        else:
            log.info(
                "reload: start %s; stop %s; restart %s",
                ", ".join(plan.start) or "-",
                ", ".join(plan.stop) or "-",
                ", ".join(f"{n} ({', '.join(f)})" for n, f in plan.restart.items()) or "-",
            )
        old, self.config = self.config, new
        if (old.notifications, old.error_handling) != (new.notifications, new.error_handling):
            # The old webhooks finish in the background, within their own bound: nothing that
            # waits for the network may hold the loop (a crash meanwhile is restarted at once).
            self.notifier.stop()
            self._retired = [n for n in self._retired if n.running] + [self.notifier]
            self.notifier = self._notifier(new, self.notifier)  # counters and breakers go on
        limits = self.manager.limits
        if new.resources != self.manager.config.resources:
            limits = machine_limits(new.resources)
        self.manager.apply_reload(new, plan, limits)
        self.hot_reload.configure(self.config)
        self.hot_reload.config_read(seen)
        if self.project_lock is not None:  # `logging:` waits for `up`, which locks it
            self.project_lock.also_hold(Path(new.logging.directory))
        self._set_bridge()
        return plan, ""
