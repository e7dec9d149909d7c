"""A late change event for writes whose restart is already under way (the watcher's thread
starved past the quiet period) restarts nothing; a new write restarts again."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq

from orchestrator.hot_reload import HotReload
from orchestrator.watch import ChangeWatcher


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


def test_a_config_event_reloads_only_when_the_content_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A touch, a save of the same text or a ConfigMap published again with the same data is no
    reload and no log line; a different content is, once, and becomes what is compared with."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "modules.yaml").write_text("modules: []\n")
    reloads: list[None] = []
    manager = SimpleNamespace(shutting_down=False)
    hot = HotReload(zmq.Poller(), manager, lambda: reloads.append(None))  # type: ignore[arg-type]
    hot.watcher = ChangeWatcher(config, {})
    try:

        def event() -> None:
            assert hot.watcher is not None
            hot.watcher.record(str(config / "modules.yaml"))
            hot.watcher.wake(0.0)  # long past: due at the next handle
            hot.handle({})

        caplog.set_level(logging.INFO, logger="orchestrator.hot_reload")
        event()
        assert (reloads, caplog.messages) == ([], [])
        (config / "modules.yaml").write_text("modules: []\n# saved\n")
        event()
        assert (reloads, caplog.messages) == ([None], ["hot reload: the config changed"])
        hot.config_read(hot.config_state())  # what the reload does
        event()
        assert len(reloads) == 1
    finally:
        hot.close()
