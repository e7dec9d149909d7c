"""Hot reload's debounce: one quiet period for everything saved together, and a cap on it."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

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


def _configmap(config: Path, version: str, modules: str) -> None:
    """A mounted ConfigMap: `modules.yaml -> ..data/modules.yaml`, `..data -> version`."""
    (config / version).mkdir()
    (config / version / "modules.yaml").write_text(modules)
    if not (config / "modules.yaml").is_symlink():
        (config / "modules.yaml").symlink_to("..data/modules.yaml")
    (config / "..data_tmp").symlink_to(version)
    (config / "..data_tmp").replace(config / "..data")


@pytest.fixture
def configmap(tmp_path: Path) -> Iterator[ChangeWatcher]:
    config = tmp_path / "config"
    config.mkdir()
    _configmap(config, "..2024_a", "modules: []\n")
    watching = ChangeWatcher(config, {})
    yield watching
    watching.close()


def _config_due(watcher: ChangeWatcher, path: Path, now: float) -> bool:
    _save(watcher, path, now)
    return watcher.due(now + DEBOUNCE)[1]


def test_a_configmap_swap_of_its_data_link_is_a_config_event(
    configmap: ChangeWatcher, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    _configmap(config, "..2024_b", "modules: []\n")
    assert _config_due(configmap, config / "..data", 10.0)  # the rename's destination
    assert not _config_due(configmap, config / "..data_tmp", 20.0)  # gone by then: no link
    assert not _config_due(configmap, config / "..2024_b", 30.0)  # a directory


def test_the_config_state_tells_a_changed_configmap_from_the_same_data(
    configmap: ChangeWatcher, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    assert configmap.config_state() == configmap.last_read
    _configmap(config, "..2024_b", "modules: []\n")  # the same data, published again
    assert configmap.config_state() == configmap.last_read
    _configmap(config, "..2024_c", "modules: []\n# changed\n")
    assert configmap.config_state() != configmap.last_read


def test_the_targets_are_followed_and_the_old_directory_dropped(
    configmap: ChangeWatcher, tmp_path: Path
) -> None:
    config = tmp_path / "config"

    def watched() -> set[str]:
        return {emitter.watch.path for emitter in configmap._observer.emitters}

    wait_until(lambda: watched() == {str(config), str(config / "..2024_a")}, 5, "the first target")
    assert _config_due(configmap, config / "..2024_a" / "modules.yaml", 10.0)  # edited in place
    assert not _config_due(configmap, config / "..2024_a" / "notes.yaml", 20.0)
    _configmap(config, "..2024_b", "modules: []\n")
    configmap.config_state()  # what the loop does before a reload
    wait_until(lambda: watched() == {str(config), str(config / "..2024_b")}, 5, "the new target")
    assert _config_due(configmap, config / "..2024_b" / "modules.yaml", 30.0)
    assert not _config_due(configmap, config / "..2024_a" / "modules.yaml", 40.0)


def test_a_linked_file_elsewhere_and_a_linked_env_count_as_config(tmp_path: Path) -> None:
    config, shared = tmp_path / "config", tmp_path / "shared"
    config.mkdir()
    shared.mkdir()
    for name in ("modules.yaml", ".env"):
        (shared / name).write_text("")
        (config / name).symlink_to(shared / name)
    watching = ChangeWatcher(config, {})
    try:
        assert _config_due(watching, shared / "modules.yaml", 10.0)
        assert _config_due(watching, shared / ".env", 20.0)
        assert not _config_due(watching, shared / "other.yaml", 30.0)
        (shared / ".env").write_text("TOKEN=2\n")
        assert watching.config_state() != watching.last_read
    finally:
        watching.close()


def test_a_module_file_reached_through_a_link_restarts_on_a_save_of_its_target(
    tmp_path: Path,
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "live.py").write_text("")
    (tmp_path / "live.py").symlink_to(tmp_path / "elsewhere" / "live.py")
    watching = ChangeWatcher(tmp_path / "config", {"live": tmp_path / "live.py"})
    try:
        _save(watching, tmp_path / "elsewhere" / "live.py", 10.0)
        assert watching.due(10.0 + DEBOUNCE) == (["live"], False)
    finally:
        watching.close()


def _package(tmp_path: Path) -> Path:
    """A package module with a tree under it (a vendored venv, a data directory)."""
    package = tmp_path / "pkg"
    (package / "data" / "a" / "b").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    return package


def test_a_reload_that_changes_no_module_makes_no_watch_again(tmp_path: Path) -> None:
    """Watching a tree takes seconds when it holds thousands of directories: a reload (every
    `orchestrator reload`, every config save) keeps the watches of the modules it keeps."""
    (tmp_path / "config").mkdir()
    (tmp_path / "lone.py").write_text("")
    modules = {"pkg": _package(tmp_path), "lone": tmp_path / "lone.py"}
    watching = ChangeWatcher(tmp_path / "config", modules)
    keeper = watching._keeper
    try:
        wait_until(keeper.idle, 5, "the first watches made")
        made, emitters = keeper.schedules, set(watching._observer.emitters)
        assert (modules["pkg"], True) in keeper.watched()
        watching.watch(modules)  # what a reload that changed no module does
        watching.config_state()  # and what every reload does before it reads the config
        wait_until(keeper.idle, 5, "the reload's watches")
        assert (keeper.schedules, set(watching._observer.emitters)) == (made, emitters)
        watching.watch({"lone": modules["lone"]})  # pkg removed: its tree alone is dropped
        wait_until(keeper.idle, 5, "pkg's watch dropped")
        assert (modules["pkg"], True) not in keeper.watched()
        assert keeper.schedules == made
    finally:
        watching.close()


def test_the_loop_never_makes_a_watch_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchdog walks a recursive watch's tree in `schedule`, on the caller's thread: the
    watcher's construction and `watch` return while a schedule is still under way elsewhere."""
    import orchestrator.watch as watch_module

    real = watch_module._observer_class()
    entered, release = threading.Event(), threading.Event()
    callers: list[threading.Thread] = []

    class SlowObserver(real):  # type: ignore[misc, valid-type]
        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            callers.append(threading.current_thread())
            entered.set()
            release.wait(10)
            return super().schedule(*args, **kwargs)

    monkeypatch.setattr(watch_module, "_observer_class", lambda: SlowObserver)
    (tmp_path / "config").mkdir()
    watching = ChangeWatcher(tmp_path / "config", {"pkg": _package(tmp_path)})
    try:
        watching.watch({"pkg": tmp_path / "pkg"})
        watching.config_state()
        assert entered.wait(5)
        assert not watching._keeper.idle()  # the schedule is still blocked, and we are here
        release.set()
        wait_until(watching._keeper.idle, 5, "the watches made")
        assert threading.current_thread() not in callers
    finally:
        release.set()
        watching.close()


def test_a_tree_deleted_under_the_look_is_looked_at_again_not_a_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rm -rf` of a data tree in a package: a directory the walk found is gone when it gets to
    it. That is no change of the module (its `.py` files are as they were), and no error."""
    import shutil

    from orchestrator import watch_work

    package = _package(tmp_path)
    before = watch_work.fingerprint(package)
    real = os.scandir

    def deleting(path: Any) -> Any:
        if str(path) == str(package / "data" / "a"):
            shutil.rmtree(package / "data")
        return real(path)

    monkeypatch.setattr(watch_work.os, "scandir", deleting)
    with pytest.raises(watch_work._VanishedError):
        watch_work.fingerprint(package)
    (package / "data" / "a").mkdir(parents=True)
    assert watch_work._look("pkg", package, False) == watch_work.Looked("pkg", before, True, False)


def test_what_a_fingerprint_counts(tmp_path: Path) -> None:
    from orchestrator.watch_work import fingerprint

    package = _package(tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.py").write_text("")
    (package / "notes.txt").write_text("")
    (package / "gone.py").symlink_to(tmp_path / "nowhere.py")  # dangling: a state, not a vanishing
    names = {Path(entry[0]).name for entry in fingerprint(package) or ()}
    assert names == {"__init__.py", "gone.py"}
    (package / "requirements.txt").write_text("")  # its venv is rebuilt as it starts
    assert {Path(e[0]).name for e in fingerprint(package) or ()} == names | {"requirements.txt"}
    assert fingerprint(tmp_path / "missing") == ()  # gone: a change, told from any files


def test_a_look_is_done_off_the_loop_and_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator import watch_work

    callers: list[threading.Thread] = []
    real = watch_work.fingerprint

    def recording(path: Path) -> Any:
        callers.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(watch_work, "fingerprint", recording)
    (tmp_path / "config").mkdir()
    package = _package(tmp_path)
    watching = ChangeWatcher(tmp_path / "config", {"pkg": package})
    try:
        watching.look({"pkg": package})
        poller = select.poll()
        poller.register(watching.read_fd, select.POLLIN)
        assert poller.poll(5000)  # the loop is woken
        found = wait_until(watching.looked, 5, "the look's answer")
        assert found == [watch_work.Looked("pkg", real(package), True, False)]
        assert callers and threading.current_thread() not in callers
    finally:
        watching.close()


def _changes_until(watching: ChangeWatcher, name: str) -> set[str]:
    """The modules taken as changed, polled until `name` is among them."""
    seen: set[str] = set()

    def due() -> bool:
        watching.wake(time.monotonic())
        seen.update(watching.due(time.monotonic() + MAX_DELAY + 1)[0])
        return name in seen

    wait_until(due, 5, f"{name} changed", lambda: repr(seen))
    return seen


def _tree_emitters(watching: ChangeWatcher, root: Path) -> set[Any]:
    return {
        e for e in watching._observer.emitters if e.watch.path == str(root) and e.watch.is_recursive
    }


def test_a_package_renamed_over_by_a_deploy_is_followed(tmp_path: Path) -> None:
    """`cp -r pkg pkg.new; edit; mv pkg pkg.old; mv pkg.new pkg`: the module changed, and its
    new directory is the one watched from then on (a watch follows its inode: the old one's
    edits were taken for the module's, the new one's missed)."""
    import shutil

    from orchestrator.watch_work import identity_of

    (tmp_path / "config").mkdir()
    package = _package(tmp_path)
    watching = ChangeWatcher(tmp_path / "config", {"pkg": package})
    try:
        wait_until(watching._keeper.idle, 5, "the first watches made")
        (old,) = _tree_emitters(watching, package)
        shutil.copytree(package, tmp_path / "pkg.new")
        (tmp_path / "pkg.new" / "ver.py").write_text("VERSION = 2\n")
        package.rename(tmp_path / "pkg.old")
        (tmp_path / "pkg.new").rename(package)
        assert _changes_until(watching, "pkg") == {"pkg"}
        new_inode = identity_of(package)
        wait_until(
            lambda: (  # the keeper's thread drops and makes the entry meanwhile: get, not []
                watching._keeper.idle()
                and watching._keeper._made.get((package, True), (None, None))[1] == new_inode
            ),
            5,
            "the new directory watched",
        )
        (new,) = _tree_emitters(watching, package)
        assert new is not old  # the old directory's watch is gone
        (package / "ver.py").write_text("VERSION = 3\n")
        assert _changes_until(watching, "pkg") == {"pkg"}
    finally:
        watching.close()


def test_the_churn_beside_a_package_is_no_change_of_it(tmp_path: Path) -> None:
    """The package's own directory is watched alone for its renames: what else happens there
    (directories made, renamed and removed, other files) changes no module."""
    (tmp_path / "config").mkdir()
    (tmp_path / "lone.py").write_text("")
    package = _package(tmp_path)
    watching = ChangeWatcher(tmp_path / "config", {"pkg": package, "lone": tmp_path / "lone.py"})
    try:
        wait_until(watching._keeper.idle, 5, "the first watches made")
        (tmp_path / "other").mkdir()
        (tmp_path / "other").rename(tmp_path / "other2")
        (tmp_path / "other2" / "x.py").write_text("")
        (tmp_path / "other2" / "x.py").unlink()
        (tmp_path / "other2").rmdir()
        (tmp_path / "notes.py").write_text("")  # no module's
        # An editor's atomic save of the file module beside it: the last event of that watch.
        (tmp_path / "lone.py.tmp").write_text("x = 1\n")
        (tmp_path / "lone.py.tmp").rename(tmp_path / "lone.py")
        assert _changes_until(watching, "lone") == {"lone"}
    finally:
        watching.close()
