"""A full log disk: modules keep running, `status` says which file is losing lines and how many,
the run directory's output file stays small, and logging resumes by itself once there is room.

The project's logs/ is a 64 KB tmpfs (the tests run as root; elsewhere they are skipped). The
handler itself is also tried in this process, against /dev/full (every write: ENOSPC)."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from project import Project

from orchestrator import logsetup
from orchestrator.logrotate import Rotation
from orchestrator.logsetup import LogFile
from orchestrator.rundir import RunDir

_BOUND = 4096  # bytes the supervisor's own output file may hold, whatever is lost


@contextlib.contextmanager
def tmpfs(directory: Path, mode: str, what: str) -> Iterator[Path]:
    """`directory` (made if need be) on a 64 KB tmpfs of its own, unmounted after; the test is
    skipped where no tmpfs can be mounted (not root)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=64k,mode={mode}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for {what} here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.fixture
def small_logs(project: Project) -> Iterator[Path]:
    """The project's logs/ directory, on a 64 KB tmpfs of its own."""
    with tmpfs(project.root / "logs", "0755", "logs/") as logs:
        try:
            yield logs
        finally:
            project.cli("down", "--timeout", "2", timeout=30)  # it holds files open on the mount


def _fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; returns the file that holds it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 4096, b"\0"):
            try:
                while os.write(fd, chunk):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def _loss(project: Project, filename: str) -> dict[str, Any] | None:
    """The `status --json` entry for a log file that lost lines, if there is one."""
    for entry in project.status().get("logging", []):
        if Path(entry["file"]).name == filename:
            return entry  # type: ignore[no-any-return]
    return None


def _chatter_numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"^(?:[\d-]+ [\d:,]+ )?chatter (\d+) ", text, re.MULTILINE)]


def test_a_full_log_disk_is_reported_bounded_and_recovered(
    project: Project, small_logs: Path
) -> None:
    project.configure(
        [
            {
                "name": "chatter",
                "path": project.probe("chatter"),
                "config": {"interval": 0.005, "pad": 100},
            }
        ]
    )
    pid = project.up()["modules"][0]["pid"]
    out = RunDir(project.config_dir, project.run_base).daemon_output
    wait_until(lambda: _chatter_numbers(project.log("chatter")), 10, "chatter's first lines")

    filler = _fill(small_logs)
    first = wait_until(lambda: _loss(project, "chatter.log"), 10, "a loss in status --json")
    assert first["failing"] is True and first["recovered"] is None, first
    assert "No space left on device" in first["error"], first
    later = wait_until(
        lambda: (e := _loss(project, "chatter.log")) and e["lost"] >= first["lost"] + 50 and e,
        10,
        "the lost-line count to rise",
    )
    assert later["since"] == first["since"], (first, later)
    row = project.module("chatter")
    assert (row["state"], row["pid"], row["restarts"]) == ("running", pid, 0), row
    human = project.cli("status", check=0).stdout
    assert re.search(r"chatter\.log.*lines lost.*No space left on device", human), human
    assert out.stat().st_size < _BOUND, out.read_text(errors="replace")[:2000]

    before = max(_chatter_numbers(project.log("chatter")))
    filler.unlink()
    wait_until(
        lambda: max(_chatter_numbers(project.log("chatter"))) > before,
        10,
        "chatter's lines to resume",
        lambda: project.log("chatter")[-2000:],
    )
    final = wait_until(
        lambda: (e := _loss(project, "chatter.log")) and not e["failing"] and e,
        10,
        "status to show the loss as over",
    )
    assert final["recovered"] is not None and final["lost"] >= later["lost"], final
    app_log = (small_logs / "app.log").read_text()
    said = re.search(r"chatter\.log: (\d+) lines? lost", app_log)
    assert said is not None and int(said.group(1)) == final["lost"], app_log[-2000:]
    assert f"{final['lost']} lines lost" in project.log("chatter")
    assert out.stat().st_size < _BOUND, out.read_text(errors="replace")[:2000]
    assert project.module("chatter")["pid"] == pid


def _logger(handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.Logger("disk-full")
    logger.addHandler(handler)
    return logger


def test_lost_lines_are_counted_silently_and_reported_once_the_path_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logsetup, "_RETRY", 0.0)  # retry on every line
    path = tmp_path / "m.log"
    path.symlink_to("/dev/full")
    full_mode = os.stat("/dev/full").st_mode
    handler = LogFile(path, Rotation())
    logger = _logger(handler)
    for number in range(1000):
        logger.info("line %d", number)
    try:
        raise OSError(errno.EIO, "I/O error")
    except OSError:
        handler.handleError(logging.makeLogRecord({"msg": "one more"}))
    report = handler.report()
    assert report is not None and report["failing"] and report["lost"] == 1001, report
    assert report["error"] == "Input/output error (EIO)", report
    assert os.stat("/dev/full").st_mode == full_mode  # only our own regular files are made private

    path.unlink()  # the operator frees the space: the next line writes to a new file
    logger.info("back")
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and lines[1] == "back", lines
    assert lines[0].startswith(f"{path}: 1001 lines lost from "), lines
    assert lines[0].endswith(" (Input/output error (EIO)); writing again"), lines
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    report = handler.report()
    assert report is not None and not report["failing"] and report["recovered"], report
    assert capfd.readouterr() == ("", "")  # not a word on stdout or stderr, however many lines
    handler.close()


def test_a_log_file_removed_or_rotated_by_someone_else_is_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logsetup, "_RECHECK", 0.0)  # check the path on every line
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation())
    logger = _logger(handler)
    logger.info("one")
    path.rename(tmp_path / "m.log.old")
    logger.info("two")
    assert (tmp_path / "m.log.old").read_text() == "one\n"
    assert path.read_text() == "two\n"
    assert handler.report() is None
    handler.close()


def test_a_detached_supervisors_stderr_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = io.StringIO()
    monkeypatch.setattr(sys, "stderr", sink)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logsetup.bound_stderr(limit=1000)
    for number in range(1000):
        print(f"a traceback line, number {number}", file=sys.stderr)
    assert 1000 <= len(sink.getvalue()) < 1100, len(sink.getvalue())
    assert sink.getvalue().endswith("[orchestrator: further output dropped]\n")
    assert logging.raiseExceptions is False


def test_a_full_run_directory_is_one_line_at_up(project: Project) -> None:
    """`up -d` said only "the supervisor did not start" (its own error could not be written
    either), a foreground `up` printed a traceback, and a half-written pid file stayed."""
    project.configure([])
    with tmpfs(project.run_base, "0700", "the run directory") as run_base:
        _fill(run_base)
        detached = project.cli("up", "-d", check=1)
        assert "the supervisor did not start: the file system of its run directory" in (
            detached.stderr
        ), detached.stderr
        foreground = project.cli("up", check=1)
        assert foreground.stderr.strip().startswith("Error: cannot write in the run directory")
        assert "No space left on device" in foreground.stderr
        assert "Traceback" not in foreground.stderr + detached.stderr
        assert not list(run_base.rglob("*.new"))


def test_a_moved_project_is_not_made_again_at_its_old_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopening made every missing directory up to the log: `mv ren1 ren2` under a running
    supervisor, and ren1/logs/tick.log was back a second later, written by it alone. Now only a
    removed logs/ itself is made again; above it, the lines are counted as lost."""
    monkeypatch.setattr(logsetup, "_RECHECK", 0.0)  # check the path on every line
    monkeypatch.setattr(logsetup, "_RETRY", 0.0)  # retry on every line
    logs = tmp_path / "ren1" / "logs"
    handler = LogFile(logs / "tick.log", Rotation(), announce=True)
    logger = _logger(handler)
    logger.info("one")
    shutil.rmtree(logs)  # logs/ alone removed: made again
    logger.info("two")
    assert (logs / "tick.log").read_text() == "two\n"
    (tmp_path / "ren1").rename(tmp_path / "ren2")
    logger.info("three")
    logger.info("four")
    assert not (tmp_path / "ren1").exists()
    assert (tmp_path / "ren2" / "logs" / "tick.log").read_text() == "two\n"
    report = handler.report()
    assert report is not None and report["failing"] and report["lost"] == 2, report
    assert report["error"] == "No such file or directory (ENOENT)", report
    handler.close()
