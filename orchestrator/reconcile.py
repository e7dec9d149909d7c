"""What a config reload changes: the plan that turns the running config into the new one.

Only what differs is touched (`ChildManager.apply_reload` carries the plan out): modules added or newly enabled start, modules removed or disabled
stop, modules whose effective settings changed restart, and every other module keeps its process.
Sections that cannot change under a running supervisor are named, not applied.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import AppConfig, ModuleSpec

# Sections of main.yaml that the running supervisor cannot switch to without a restart of its own.
NEEDS_SUPERVISOR_RESTART = ("bus", "logging", "metrics")


@dataclass(frozen=True)
class ReloadPlan:
    """The difference between two configs, module by module."""

    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()
    restart: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> changed fields
    unchanged: tuple[str, ...] = ()
    not_applied: tuple[str, ...] = ()  # main.yaml sections that need `down` + `up`

    @property
    def empty(self) -> bool:
        return not (self.start or self.stop or self.restart)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": list(self.start),
            "stop": list(self.stop),
            "restart": {name: list(fields) for name, fields in self.restart.items()},
            "unchanged": list(self.unchanged),
            "not_applied": list(self.not_applied),
        }


def plan_reload(old: AppConfig, new: AppConfig) -> ReloadPlan:
    """Compare the enabled modules and the global sections of two configs."""
    before = {spec.name: spec for spec in old.enabled_instances}  # an instance is a module here
    after = {spec.name: spec for spec in new.enabled_instances}
    restart = {
        name: _changed_fields(before[name], spec)
        for name, spec in after.items()
        if name in before and before[name] != spec
    }
    return ReloadPlan(
        start=tuple(name for name in after if name not in before),
        stop=tuple(name for name in before if name not in after),
        restart=restart,
        unchanged=tuple(name for name in after if name in before and name not in restart),
        not_applied=tuple(
            section
            for section in NEEDS_SUPERVISOR_RESTART
            if getattr(old, section) != getattr(new, section)
        ),
    )


def _changed_fields(before: ModuleSpec, after: ModuleSpec) -> tuple[str, ...]:
    changed: list[str] = []
    for item in dataclasses.fields(ModuleSpec):
        if getattr(before, item.name) == getattr(after, item.name):
            continue
        if item.name == "supervision":
            changed.extend(
                key
                for key, value in dataclasses.asdict(after.supervision).items()
                if getattr(before.supervision, key) != value
            )
        else:
            changed.append(item.name)
    return tuple(changed)
