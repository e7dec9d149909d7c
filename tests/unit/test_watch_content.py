"""What the watcher reads of the config files on the loop never raises, whatever a deploy put in
a file's place (a directory that `docker run -v` made, a FIFO), and leaves no descriptor open."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.config.yamlfile import read_text
from orchestrator.watch import CONFIG_FILES, ChangeWatcher, _content


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("x")  # docker makes it empty; a deploy may not


PLACED: dict[str, Callable[[Path], None]] = {"directory": _directory, "fifo": os.mkfifo}


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[ChangeWatcher]:
    config = tmp_path / "config"
    config.mkdir()
    (config / "main.yaml").write_text("hot_reload: true\n")
    (config / "modules.yaml").write_text("modules: []\n")
    watching = ChangeWatcher(config, {})
    yield watching
    watching.close()


@pytest.mark.parametrize("kind", sorted(PLACED))
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_a_config_file_replaced_is_a_change_not_an_error(
    watcher: ChangeWatcher, tmp_path: Path, name: str, kind: str
) -> None:
    path = tmp_path / "config" / name
    path.unlink(missing_ok=True)
    PLACED[kind](path)
    state = watcher.config_state()  # raised IsADirectoryError for a directory, on the loop
    assert state != watcher.last_read  # a change: the reload is tried, and refused there
    assert watcher.config_state() == state  # and the same thing twice is no change


@pytest.mark.parametrize("kind", sorted(PLACED))
def test_reading_what_is_in_a_files_place_leaves_no_descriptor_open(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / ".env"
    PLACED[kind](path)
    before = _open_fds()
    for _ in range(3):
        assert _content(path)[0] == "not a regular file"  # type: ignore[index]
    assert _open_fds() == before  # a directory's descriptor leaked each time


def test_read_text_of_a_directory_raises_what_the_loader_names_and_closes_it(
    tmp_path: Path,
) -> None:
    before = _open_fds()
    for _ in range(3):
        with pytest.raises(IsADirectoryError):
            read_text(tmp_path)
    assert _open_fds() == before
