"""A late change event for writes whose restart is already under way (the watcher's thread
starved past the quiet period) restarts nothing; a new write restarts again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zmq

from orchestrator.hot_reload import HotReload


class FakeWatcher:
    read_fd = -1

    def __init__(self) -> None:
        self.pending: list[str] = []

    def wake(self, now: float) -> None:
        pass

    def due(self, now: float) -> tuple[list[str], bool]:
        ready, self.pending = self.pending, []
        return ready, False


def test_a_late_event_of_the_same_writes_restarts_nothing(tmp_path: Path) -> None:
    source = tmp_path / "live.py"
    source.write_text("version = 1\n")
    child = SimpleNamespace(name="live", spec=SimpleNamespace(instance_of=None))
    restarted: list[Any] = []
    manager = SimpleNamespace(
        config=SimpleNamespace(module=lambda name: SimpleNamespace(path=source)),
        children={"live": child},
        shutting_down=False,
        restart_changed=restarted.append,
    )
    hot = HotReload(zmq.Poller(), manager, lambda: None)  # type: ignore[arg-type]
    watcher = hot.watcher = FakeWatcher()  # type: ignore[assignment]
    watcher.pending = ["live"]
    hot.handle({})
    assert restarted == [child]
    watcher.pending = ["live"]  # the same writes, reported late
    hot.handle({})
    assert restarted == [child]
    source.write_text("version = 22\n")  # a new save
    watcher.pending = ["live"]
    hot.handle({})
    assert restarted == [child, child]
