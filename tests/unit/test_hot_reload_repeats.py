"""A late change event for writes whose restart is already under way (the watcher's thread
starved past the quiet period) restarts nothing; a new write restarts again."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zmq
from helpers import wait_until

from orchestrator import watch_work
from orchestrator.hot_reload import HotReload
from orchestrator.watch import ChangeWatcher
from orchestrator.watch_work import Fingerprint, Looked, fingerprint


class FakeWatcher:
    """The watcher as the loop sees it; its looks are answered by `fingerprints` (by default
    the files' own), at the loop's next turn as the keeper's thread would."""

    read_fd = -1

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.answers: list[Looked] = []
        self.looks: list[tuple[str, bool]] = []
        self.fingerprints: dict[str, Fingerprint | str | None] = {}

    def wake(self, now: float) -> None:
        pass

    def due(self, now: float) -> tuple[list[str], bool]:
        ready, self.pending = self.pending, []
        return ready, False

    def look(self, paths: dict[str, Path], *, baseline: bool = False) -> None:
        for name, path in paths.items():
            self.looks.append((name, baseline))
            found = self.fingerprints.get(name, fingerprint(path))
            sure = found != "vanishing"
            self.answers.append(Looked(name, None if not sure else found, sure, baseline))  # type: ignore[arg-type]

    def looked(self) -> list[Looked]:
        found, self.answers = self.answers, []
        return found

    def again(self, name: str) -> None:
        self.pending.append(name)

    def marked_since(self, name: str, since: float) -> bool:
        return False  # its looks are answered at once: nothing is saved during one


def _hot(source: Path) -> tuple[HotReload, FakeWatcher, list[Any], Any]:
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
    return hot, watcher, restarted, child


def _turns(hot: HotReload) -> None:
    """The loop's turn that the change is due in, and the next, that the look's answer is in."""
    hot.handle({})
    hot.handle({})


def test_a_late_event_of_the_same_writes_restarts_nothing(tmp_path: Path) -> None:
    source = tmp_path / "live.py"
    source.write_text("version = 1\n")
    hot, watcher, restarted, child = _hot(source)
    watcher.pending = ["live"]
    _turns(hot)
    assert restarted == [child]
    watcher.pending = ["live"]  # the same writes, reported late
    _turns(hot)
    assert restarted == [child]
    source.write_text("version = 22\n")  # a new save
    watcher.pending = ["live"]
    _turns(hot)
    assert restarted == [child, child]


def test_events_lost_restart_no_module_whose_files_are_as_they_began(tmp_path: Path) -> None:
    """inotify's queue overflowing (a tree deleted in a package) takes every module as changed:
    the files as they were when the module began to be watched tell that it is not."""
    source = tmp_path / "live.py"
    source.write_text("version = 1\n")
    hot, watcher, restarted, _ = _hot(source)
    watcher.look({"live": source}, baseline=True)  # what `configure` asks for
    watcher.pending = ["live"]  # what `lost` makes of an overflow
    _turns(hot)
    assert restarted == []


def test_a_tree_changing_under_the_look_is_looked_at_again_not_restarted(tmp_path: Path) -> None:
    """A directory vanishing under the walk (a data tree being deleted) says nothing yet."""
    source = tmp_path / "live.py"
    source.write_text("version = 1\n")
    hot, watcher, restarted, _ = _hot(source)
    watcher.look({"live": source}, baseline=True)
    watcher.fingerprints["live"] = "vanishing"
    watcher.pending = ["live"]
    _turns(hot)
    _turns(hot)
    assert restarted == []
    assert watcher.looks[:4] == [("live", True), ("live", False), ("live", False), ("live", False)]
    del watcher.fingerprints["live"]  # the deletion is over: the .py files are as they were
    _turns(hot)
    assert restarted == []
    assert watcher.pending == watcher.answers == []  # settled: no more looks
    source.write_text("version = 2\n")  # and a save is still a change
    watcher.pending = ["live"]
    _turns(hot)
    assert len(restarted) == 1


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


def test_a_save_during_the_first_look_is_not_taken_for_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first look at a module (what it runs) walks a large tree for seconds: a save made
    meanwhile was in it, and that save's own look then found the files as they were."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("V = 1\n")
    walking, saved = threading.Event(), threading.Event()

    def slow(path: Path) -> Fingerprint | None:
        if not walking.is_set():  # the baseline's walk: held until the save is made
            walking.set()
            saved.wait(10)
        return fingerprint(path)

    monkeypatch.setattr(watch_work, "fingerprint", slow)
    restarted: list[Any] = []
    spec = SimpleNamespace(name="pkg", path=package)
    config = SimpleNamespace(
        hot_reload=True, config_dir=tmp_path, enabled_modules=[spec], module=lambda name: spec
    )
    manager = SimpleNamespace(
        config=config,
        children={"pkg": SimpleNamespace(name="pkg", spec=SimpleNamespace(instance_of=None))},
        shutting_down=False,
        restart_changed=restarted.append,
    )
    poller = zmq.Poller()
    hot = HotReload(poller, manager, lambda: None)  # type: ignore[arg-type]
    hot.configure(config)  # type: ignore[arg-type]
    try:
        assert walking.wait(10)
        (package / "__init__.py").write_text("V = 2\n")  # the user saves
        assert hot.watcher is not None
        wait_until(lambda: hot.watcher.marked_since("pkg", 0.0), 10, "the save seen")  # type: ignore[union-attr]
        saved.set()

        def turn() -> bool:
            hot.handle(dict(poller.poll(50)))
            return bool(restarted)

        wait_until(turn, 10, "the module restarted onto the saved code")
    finally:
        saved.set()
        hot.close()
