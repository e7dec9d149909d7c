"""The lock in a project's logs directory: who holds it, and keeping it when it is removed."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

import pytest

from orchestrator.project_lock import (
    PROJECT_LOCK,
    ProjectTakenError,
    lock_project,
    project_holder,
)


def test_the_holder_is_named_with_its_run_directory_while_it_holds_the_lock(
    tmp_path: Path,
) -> None:
    lock = lock_project(tmp_path, Path("/run/x/0123"))
    assert lock is not None
    assert project_holder(tmp_path) == (os.getpid(), "/run/x/0123")
    lock.close()
    assert project_holder(tmp_path) is None  # the file stays; nobody holds it
    assert project_holder(tmp_path / "nowhere") is None


def test_a_lock_removed_with_its_directory_is_made_and_taken_again(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    lock = lock_project(logs, Path("/run/x/0123"))
    assert lock is not None
    shutil.rmtree(logs)
    lock.keep(now=1e9)
    assert (logs / PROJECT_LOCK).is_file()
    assert project_holder(logs) == (os.getpid(), "/run/x/0123")
    lock.close()


def test_a_moved_project_is_not_made_again_by_its_lock(tmp_path: Path) -> None:
    logs = tmp_path / "p" / "logs"
    logs.mkdir(parents=True)
    lock = lock_project(logs, Path("/run/x/0123"))
    assert lock is not None
    (tmp_path / "p").rename(tmp_path / "q")
    lock.keep(now=1e9)
    assert not (tmp_path / "p").exists()
    lock.close()


def test_a_new_lock_held_a_moment_is_said_only_when_it_stays_held(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CLI asking who holds the lock holds it shared for a moment: a supervisor taking the
    file again just then said it was locked by another (a review), then took it a second later."""
    logs = tmp_path / "logs"
    logs.mkdir()
    lock = lock_project(logs, Path("/run/x/0123"))
    assert lock is not None
    (logs / PROJECT_LOCK).unlink()
    other = os.open(logs / PROJECT_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_SH)
    with caplog.at_level(logging.ERROR, logger="orchestrator.project_lock"):
        lock.keep(now=1e9)
        assert not caplog.records  # once: maybe a CLI asking
        lock.keep(now=2e9)
        assert "the new one is locked" in caplog.text  # still so a second later: said
        fcntl.flock(other, fcntl.LOCK_UN)
        lock.keep(now=3e9)
    assert project_holder(logs) == (os.getpid(), "/run/x/0123")
    os.close(other)
    lock.close()


def test_a_reloaded_logs_directory_is_locked_too_until_down_or_a_reload_back(
    tmp_path: Path,
) -> None:
    """A reload's `logging.directory` applies at the next `up`: an `up` through another run
    directory locked that directory, free, and ran the project twice; `status` and `down` looked
    there and said nothing ran."""
    logs, logs2, logs3 = tmp_path / "logs", tmp_path / "logs2", tmp_path / "logs3"
    logs.mkdir()
    lock = lock_project(logs, Path("/run/x/0123"))
    assert lock is not None
    lock.also_hold(logs2)  # made (logs2/ itself) and locked, at once
    assert project_holder(logs2) == (os.getpid(), "/run/x/0123")
    with pytest.raises(ProjectTakenError):
        lock_project(logs2, Path("/run/y/4567"))
    lock.also_hold(logs3)  # another reload: that one instead
    assert project_holder(logs2) is None
    assert project_holder(logs3) == (os.getpid(), "/run/x/0123")
    shutil.rmtree(logs3)
    lock.keep(now=1e9)  # kept as the own one is
    assert project_holder(logs3) == (os.getpid(), "/run/x/0123")
    lock.also_hold(logs)  # back to where it logs: no other
    assert project_holder(logs3) is None
    assert project_holder(logs) == (os.getpid(), "/run/x/0123")
    lock.also_hold(logs2)
    lock.close()  # both go with the supervisor
    assert project_holder(logs) is None and project_holder(logs2) is None


def test_a_reloaded_logs_directory_another_supervisor_holds_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs, shared = tmp_path / "logs", tmp_path / "shared"
    logs.mkdir()
    shared.mkdir()
    lock = lock_project(logs, Path("/run/x/0123"))
    other = os.open(shared / PROJECT_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(other, fcntl.LOCK_EX)
    assert lock is not None
    with caplog.at_level(logging.ERROR, logger="orchestrator.project_lock"):
        lock.also_hold(shared)
        lock.keep(now=1e9)
        lock.keep(now=2e9)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "the next `up` (with the reloaded logging.directory) fails"
    ]
    fcntl.flock(other, fcntl.LOCK_UN)
    lock.keep(now=3e9)
    assert project_holder(shared) == (os.getpid(), "/run/x/0123")
    os.close(other)
    lock.close()
