"""The `depends_on` graph among the supervised modules, as the manager asks it: what a module
waits for, who follows a module that stopped running, and in what order a shutdown stops them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orchestrator.child import ManagedChild
from orchestrator.states import ChildState


def waiting_for(child: ManagedChild, children: Mapping[str, ManagedChild]) -> str | None:
    """Why `child` may not start yet because of its dependencies, or None."""
    missing = [
        name
        for name in child.spec.depends_on
        if (other := children.get(name)) is None or other.state is not ChildState.RUNNING
    ]
    return "waiting for " + ", ".join(missing) + " to run (depends_on)" if missing else None


def dependents(child: ManagedChild, children: Iterable[ManagedChild]) -> list[ManagedChild]:
    """The modules that depend on `child`, in config order."""
    return [other for other in children if child.name in other.spec.depends_on]


def stoppable(children: Mapping[str, ManagedChild]) -> list[ManagedChild]:
    """In a shutdown: the modules with a process not yet stopping none of whose dependents has
    a process any more (dependents stop before what they depend on), last in config first."""
    return [
        child
        for child in reversed(list(children.values()))
        if child.pid is not None
        and child.state is not ChildState.STOPPING
        and not any(other.pid is not None for other in dependents(child, children.values()))
    ]
