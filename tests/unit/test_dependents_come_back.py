"""`comes_back`: whether what a waiting module waits for is on its way to running by itself
(a `restart` of it keeps waiting then); judged once per dependency, whatever the graph."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from orchestrator import lifecycle as lc
from orchestrator.dependents import comes_back
from orchestrator.states import ChildState


def _module(name: str, depends_on: list[str], state: ChildState, held: str = "") -> Any:
    return SimpleNamespace(
        name=name,
        spec=SimpleNamespace(depends_on=tuple(depends_on), instance_of=None),
        life=SimpleNamespace(intent=lc.Intent.NONE, held=held, draining=False),
        state=state,
        why="waiting for something to run",
    )


def _layers(width: int, layers: int, db_state: ChildState, held: str = "") -> dict[str, Any]:
    """`db`, then `layers` layers of `width` modules each depending on all of the layer below,
    then `top`: width ** layers paths from top to db."""
    children = {"db": _module("db", [], db_state, held)}
    below = ["db"]
    for layer in range(layers):
        names = [f"m{layer}_{i}" for i in range(width)]
        children.update((name, _module(name, below, ChildState.WAITING)) for name in names)
        below = names
    children["top"] = _module("top", below, ChildState.WAITING)
    return children


def test_a_wide_deep_graph_is_judged_once_per_module() -> None:
    # 8 ** 10 paths: walked one by one (as it was), this never ends; the per-test timeout fails.
    children = _layers(8, 10, ChildState.BACKOFF)  # db restarting: all above wait, and come back
    assert comes_back(children["top"], children)
    held = _layers(8, 10, ChildState.STOPPED, held="stopped by `orchestrator stop`")
    assert not comes_back(held["top"], held)


def test_a_cycle_never_comes_back() -> None:
    children = {
        "a": _module("a", ["b"], ChildState.WAITING),
        "b": _module("b", ["a"], ChildState.WAITING),
        "top": _module("top", ["a"], ChildState.WAITING),
    }
    assert not comes_back(children["top"], children)
