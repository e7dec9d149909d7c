"""The `depends_on` graph among the supervised modules, as the manager asks it: what a module
waits for, who follows a module that stopped running, and in what order a shutdown stops them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orchestrator import lifecycle as lc
from orchestrator.child import ManagedChild
from orchestrator.instances import depends, live_members
from orchestrator.states import ChildState


def waiting_for(child: ManagedChild, children: Mapping[str, ManagedChild]) -> str | None:
    """Why `child` may not start yet because of its dependencies, or None. A dependency with
    instances runs when every one of its instances runs; one that drains (it stops once its
    dependents have) no longer counts as running."""
    missing = [
        name
        for name in child.spec.depends_on
        if not (others := live_members(children, name))
        or any(not _satisfies(other) for other in others)
    ]
    if not missing:
        return None
    chain = [f"{name}: {why}" for name in missing if (why := _waits(children, name))]
    return "waiting for " + ", ".join(missing) + f" to run ({'; '.join(['depends_on', *chain])})"


def comes_back(child: ManagedChild, children: Mapping[str, ManagedChild]) -> bool:
    """Whether every dependency `child` waits for is on its way to running on its own: stopping
    to start again, backing off, starting, or waiting for ones that are. Not one that is held,
    stopped, failed, removed or behind an open start breaker: only an operator brings it back."""
    return _all_come_back(child, children, {}, frozenset({child.name}))


def _all_come_back(
    child: ManagedChild,
    children: Mapping[str, ManagedChild],
    judged: dict[str, bool],
    path: frozenset[str],
) -> bool:
    """Each dependency is judged once per question (`judged`): walking every path through a
    shared graph cost seconds of the loop for 30 modules, on every turn a command waited."""
    for name in child.spec.depends_on:
        if name in path:
            return False  # a cycle: nothing in it starts first
        if name not in judged:
            judged[name] = _name_comes_back(name, children, judged, path | {name})
        if not judged[name]:
            return False
    return True


def _name_comes_back(
    name: str,
    children: Mapping[str, ManagedChild],
    judged: dict[str, bool],
    path: frozenset[str],
) -> bool:
    members = live_members(children, name)
    if not members:
        return False  # removed meanwhile
    for member in members:
        if _satisfies(member):
            continue
        if member.life.held or member.life.intent in (lc.Intent.STOP, lc.Intent.REMOVE):
            return False
        if member.state in (ChildState.STOPPED, ChildState.FAILED):
            return False
        if member.why.startswith(lc.CIRCUIT_OPEN):
            return False
        if member.state is ChildState.WAITING and not (
            waiting_for(member, children) is not None
            and _all_come_back(member, children, judged, path)
        ):
            return False  # it waits for a limit, or for what does not come back
    return True


def _waits(children: Mapping[str, ManagedChild], name: str) -> str:
    """Why dependency `name` (or one of its instances) waits itself, shortened, or "": the chain
    `status` shows, e.g. `waiting for api to run (depends_on; api: waiting for db)`."""
    for member in live_members(children, name):
        if member.state is ChildState.WAITING and member.why:
            return member.why.removesuffix(" to run (depends_on)")
    return ""


def dependents(child: ManagedChild, children: Iterable[ManagedChild]) -> list[ManagedChild]:
    """The modules that depend on `child` (or on its module, for an instance), in config order."""
    return [other for other in children if depends(other, child)]


def must_drain(child: ManagedChild, children: Iterable[ManagedChild]) -> bool:
    """Whether a stop of `child` must wait for dependents that follow it (any edge but
    `ignore`) and still have a process: they stop first. Not for an instance while another
    instance of its module runs: the pool they depend on stays up."""
    children = list(children)
    if pool_remains(child, children):
        return False
    edge = child.spec.instance_of or child.name  # an instance: its module's edge
    return any(
        other.pid is not None and other.spec.on_failure(edge) != "ignore"
        for other in dependents(child, children)
    )


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


def _satisfies(dependency: ManagedChild) -> bool:
    """A dependency is met by a running module that is not draining, or by a job that finished
    (`done`: exit 0 with `restart: never`), as systemd's oneshot units are."""
    if dependency.state is ChildState.DONE:
        return True
    return dependency.state is ChildState.RUNNING and not dependency.life.draining


def pool_remains(child: ManagedChild, children: Iterable[ManagedChild]) -> bool:
    """Whether `child` is an instance and another instance of its module runs (and stays): its
    dependents then have what they depend on, and need not follow it."""
    module = child.spec.instance_of
    return module is not None and any(
        other is not child
        and other.spec.instance_of == module
        and other.state is ChildState.RUNNING
        and other.life.intent is not lc.Intent.REMOVE
        for other in children
    )
