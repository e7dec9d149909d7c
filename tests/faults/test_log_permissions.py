"""Log files and the run directory's files are the owner's alone, whatever the umask: a module's
output (or the supervisor's log) may say more than it should."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from project import Project

from orchestrator.rundir import RunDir


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which files are made world-readable unless made otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _readable_by_others(directory: Path) -> list[str]:
    """Regular files under `directory` that others may read. The module keeps writing: a file
    listed may be rotated away (`x.log.4` renamed over `x.log.5`) before it is looked at."""
    found = []
    for path in sorted(directory.rglob("*")):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o007:
            found.append(f"{path}: {stat.S_IMODE(info.st_mode):o}")
    return found


def test_log_and_run_files_are_not_world_readable(project: Project, umask_022: None) -> None:
    project.configure(
        [{"name": "chatter", "path": project.probe("chatter"), "config": {"pad": 200}}],
        logging={"level": "INFO", "directory": "logs", "max_file_size_mb": 0.002},
    )
    project.up()
    logs = project.root / "logs"
    wait_until((logs / "chatter.log.2").exists, 10, "chatter.log to rotate twice")
    files = sorted(path.name for path in logs.iterdir())
    # (it keeps rotating meanwhile: .2 may be on its way to .3 as the directory is listed)
    rotated = [name for name in files if name.startswith("chatter.log.")]
    assert {"app.log", "chatter.log"} <= set(files) and len(rotated) >= 2, files
    assert _readable_by_others(logs) == []
    run_dir = RunDir(project.config_dir, project.run_base).path
    assert (run_dir / "supervisor.pid").exists()
    assert _readable_by_others(run_dir) == []
