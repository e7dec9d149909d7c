"""Hot reload's debounce: one quiet period for everything saved together, and a cap on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.watch import DEBOUNCE, MAX_DELAY, ChangeWatcher


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[ChangeWatcher]:
    (tmp_path / "config").mkdir()
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.py").write_text("")
    watching = ChangeWatcher(tmp_path / "config", {"a": tmp_path / "a.py", "b": tmp_path / "b.py"})
    yield watching
    watching.close()


def _save(watcher: ChangeWatcher, path: Path, now: float) -> None:
    """What the observer thread does for a write, then the loop's wake-up at `now`."""
    watcher.record(str(path))
    watcher.wake(now)


def test_what_is_saved_together_is_due_together(watcher: ChangeWatcher, tmp_path: Path) -> None:
    _save(watcher, tmp_path / "a.py", 10.0)
    _save(watcher, tmp_path / "config" / "modules.yaml", 10.0 + DEBOUNCE * 0.8)
    assert watcher.due(10.0 + DEBOUNCE * 1.1) == ([], False)  # a's own quiet period is over
    assert watcher.next_deadline() == pytest.approx(10.0 + DEBOUNCE * 1.8)
    assert watcher.due(10.0 + DEBOUNCE * 1.8) == (["a"], True)
    assert watcher.next_deadline() is None


def test_a_file_written_without_pause_is_acted_on_after_the_cap(
    watcher: ChangeWatcher, tmp_path: Path
) -> None:
    step = DEBOUNCE / 2
    now = 20.0
    while now < 20.0 + MAX_DELAY:
        assert watcher.due(now) == ([], False)
        _save(watcher, tmp_path / "b.py", now)
        now += step
    assert watcher.due(20.0 + MAX_DELAY) == (["b"], False)


def test_other_files_are_ignored(watcher: ChangeWatcher, tmp_path: Path) -> None:
    _save(watcher, tmp_path / "notes.txt", 30.0)
    _save(watcher, tmp_path / "config" / "other.yaml", 30.0)
    assert watcher.next_deadline() is None


def test_a_package_modules_requirements_file_restarts_it(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    package = tmp_path / "pkg"
    package.mkdir()
    watching = ChangeWatcher(tmp_path / "config", {"pkg": package})
    try:
        _save(watching, package / "requirements.txt", 40.0)  # its venv is rebuilt as it starts
        assert watching.due(40.0 + DEBOUNCE) == (["pkg"], False)
    finally:
        watching.close()


def test_events_the_kernel_lost_count_as_every_file_changed(
    watcher: ChangeWatcher, tmp_path: Path
) -> None:
    """In a storm of writes inotify's queue overflows and watchdog says events were lost (for a
    directory watch): a module saved meanwhile must not be missed for good."""
    from watchdog.events import EventsLostEvent

    watcher._handler.dispatch(EventsLostEvent(str(tmp_path / "config"), is_directory=True))
    watcher.wake(10.0)
    assert watcher.due(10.0 + DEBOUNCE) == (["a", "b"], True)
