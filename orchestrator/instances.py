"""Instances of one module (`instances: N` runs `NAME#1`..`NAME#N`): which children a name stands
for, what depends on what, and `scale` at run time.

Each instance is a child of its own (its own process, log, restarts, limits and health); this
module only groups them. Only the supervisor's loop calls into it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from orchestrator import lifecycle as lc
from orchestrator.config import AppConfig
from orchestrator.config.model import INSTANCE_MARK

if TYPE_CHECKING:
    from orchestrator.child import ManagedChild
    from orchestrator.manager import ChildManager

log = logging.getLogger(__name__)


def instance_index(child: ManagedChild) -> int:
    """k of `NAME#k`; 0 for a module without instances."""
    if child.spec.instance_of is None:
        return 0
    return int(child.name.rpartition(INSTANCE_MARK)[2])


def members(children: Mapping[str, ManagedChild], name: str) -> list[ManagedChild]:
    """The children `name` stands for: the module (or instance) of that name, or every instance
    of module `name`, in instance order; empty if none. A module a reload turned into instances
    of the same name stands for them while its process stops, not for itself."""
    found = sorted((c for c in children.values() if c.spec.instance_of == name), key=instance_index)
    exact = children.get(name)
    if exact is not None and not (found and exact.life.intent is lc.Intent.REMOVE):
        return [exact]
    return found


def being_removed(children: Mapping[str, ManagedChild], child: ManagedChild) -> bool:
    """Whether a reload (or a scale down) took `child` out: it is stopping for good, or gone."""
    return children.get(child.name) is not child or child.life.intent is lc.Intent.REMOVE


def live_members(children: Mapping[str, ManagedChild], name: str) -> list[ManagedChild]:
    """`members`, less the instances being removed (a `scale` down or a reload)."""
    return [c for c in members(children, name) if c.life.intent is not lc.Intent.REMOVE]


def depends(child: ManagedChild, on: ManagedChild) -> bool:
    """Whether `child` depends on `on`: by its name, or on its module when `on` is an instance."""
    names = child.spec.depends_on
    return on.name in names or (on.spec.instance_of is not None and on.spec.instance_of in names)


def scaled_config(config: AppConfig, name: str, count: int) -> AppConfig:
    """`config` with module `name` running `count` instances."""
    modules = tuple(
        dataclasses.replace(m, instances=count) if m.name == name else m for m in config.modules
    )
    return dataclasses.replace(config, modules=modules)


def scale(
    manager: ChildManager, name: str, count: int
) -> tuple[list[ManagedChild], list[ManagedChild]]:
    """Run `count` instances of module `name` (it has `instances:`): start the missing ones,
    remove the highest-numbered extras; the others are not touched. Returns (started,
    removed). The count holds until the next reload or `up`, which go by the config file."""
    entry = manager.config.module(name)
    if entry is None or entry.instances is None:
        raise ValueError(name)
    live = live_members(manager.children, name)
    specs = entry.instance_specs(count)
    started: list[ManagedChild] = []
    for spec in specs[len(live) :]:
        old = manager.children.get(spec.name)
        if old is not None:  # removed a moment ago, its process not yet gone: it comes back
            old.spec = spec
            manager.handle(old, lc.RestartRequested(time.monotonic(), revive=True))
            started.append(old)
        else:
            started.append(manager.add(spec))
    removed = [child for child in live if instance_index(child) > count]
    manager.config = scaled_config(manager.config, name, count)
    log.info("scale %s: %d -> %d instances", name, len(live), count)
    for child in removed:
        manager.handovers.removed(child, manager.stop)
        manager.handle(child, lc.RemoveRequested(time.monotonic()))
    with manager.starting_together():
        for child in started:
            if child.life.intent is lc.Intent.NONE and not child.state.has_process:
                manager.start(child)
    return started, removed
