"""Rotation of log files: by size between lines, daily at local midnight (an injected clock),
rotated files pruned by age, gzipped off the loop, and what a dead supervisor left half done."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import stat
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator import logrotate
from orchestrator.config import ConfigError
from orchestrator.config.sections import build_logging
from orchestrator.logrotate import PENDING, Rotation, next_midnight, rotated_files, wait_idle
from orchestrator.logsetup import LogFile

DAY = 86400.0


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(b"line %06d %s\n" % (n, b"x" * 40) for n in range(start, start + count))


def _numbers(data: bytes) -> list[int]:
    return [int(line.split()[1]) for line in data.splitlines() if line.startswith(b"line ")]


def _read_all(path: Path) -> bytes:
    """Every rotated file of `path`, oldest first, then `path` itself, decompressed."""
    rotated = sorted(rotated_files(path), key=lambda p: -int(p.name.split(".")[2]))
    parts = [
        gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes() for p in rotated
    ]
    return b"".join(parts) + path.read_bytes()


def test_a_block_is_rotated_between_its_lines_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=2000, backup_count=50))
    written = 0
    for size in (10, 100, 3, 250, 1):  # blocks larger than a whole file too
        handler.write_block(_lines(size, written), size)
        written += size
    handler.close()
    files = [*rotated_files(path), path]
    assert all(f.stat().st_size <= 2000 for f in files), [(f, f.stat().st_size) for f in files]
    assert _numbers(_read_all(path)) == list(range(written))


def test_a_line_longer_than_a_file_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=100, backup_count=2))
    handler.write_block(b"short\n", 1)
    handler.write_block(b"y" * 500 + b"\nafter\n", 2)
    handler.close()
    assert path.read_bytes() == b"after\n"
    assert Path(f"{path}.1").read_bytes() == b"y" * 500 + b"\n"
    assert Path(f"{path}.2").read_bytes() == b"short\n"


def test_lines_of_a_block_that_cannot_be_written_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.symlink_to("/dev/full")
    handler = LogFile(path, Rotation())
    handler.write_block(_lines(7), 7)
    handler.write_block(_lines(5), 5)  # within the retry interval: counted without a try
    report = handler.report()
    assert report is not None and report["lost"] == 12 and report["failing"], report
    handler.close()


def test_a_file_that_cannot_be_rotated_is_written_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A directory at `m.log.1` (moved to `.2` by the first rotation, which unlink then refuses):
    # every line after was lost, each write trying the rotation again.
    path = tmp_path / "m.log"
    (tmp_path / "m.log.1" / "x").mkdir(parents=True)
    handler = LogFile(path, Rotation(max_bytes=500, backup_count=2), announce=True)
    with caplog.at_level(logging.WARNING, logger="orchestrator.logsetup"):
        for start in range(0, 60, 6):
            handler.write_block(_lines(6, start), 6)
    assert handler.report() is None  # nothing lost
    kept = [f for f in (Path(f"{path}.2"), Path(f"{path}.1"), path) if f.is_file()]
    assert _numbers(b"".join(f.read_bytes() for f in kept)) == list(range(60))
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot rotate {path} (Is a directory (EISDIR)); writing on to it"
    ]
    handler.close()


def test_a_file_where_the_log_directory_should_be_is_named_so(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("")
    handler = LogFile(tmp_path / "logs" / "m.log", Rotation())
    handler.write_block(_lines(1), 1)
    report = handler.report()
    assert report is not None and report["error"] == "Not a directory (ENOTDIR)", report
    handler.close()


def test_daily_rotation_at_local_midnight(tmp_path: Path) -> None:
    evening = datetime(2026, 3, 28, 23, 59, 30).timestamp()  # the night before a DST change
    clock = Clock(evening)
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(backup_count=5, daily=True), clock=clock)
    handler.write_block(b"day one\n", 1)
    clock.now = next_midnight(evening) - 0.001
    handler.write_block(b"still day one\n", 1)
    assert not Path(f"{path}.1").exists()
    clock.now = next_midnight(evening) + 1
    handler.write_block(b"day two\n", 1)
    assert Path(f"{path}.1").read_bytes() == b"day one\nstill day one\n"
    assert path.read_bytes() == b"day two\n"
    clock.now += 3 * DAY  # days without a line: one rotation, at the next line
    handler.write_block(b"day five\n", 1)
    assert Path(f"{path}.2").read_bytes() == b"day one\nstill day one\n"
    assert Path(f"{path}.1").read_bytes() == b"day two\n"
    assert path.read_bytes() == b"day five\n"
    handler.close()


def test_an_empty_file_is_not_rotated_at_midnight(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 5, 1, 22).timestamp())
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(backup_count=5, daily=True), clock=clock)
    clock.now += 4 * 3600  # past midnight, nothing written yet
    handler.write_block(b"first\n", 1)
    clock.now += 3600  # the same new day: its line stays with the first
    handler.write_block(b"second\n", 1)
    handler.close()
    assert path.read_bytes() == b"first\nsecond\n"
    assert rotated_files(path) == []


def test_next_midnight_is_local_midnight() -> None:
    for moment in (datetime(2026, 3, 28, 12).timestamp(), datetime(2026, 10, 24, 23).timestamp()):
        midnight = datetime.fromtimestamp(next_midnight(moment))
        assert (midnight.hour, midnight.minute, midnight.second) == (0, 0, 0), midnight
        assert 0 < next_midnight(moment) - moment <= DAY + 3600


def test_a_file_written_yesterday_rotates_at_the_first_line_after_a_start(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    path.write_bytes(b"yesterday\n")
    now = time.time()
    os.utime(path, (now - DAY, now - DAY))
    handler = LogFile(path, Rotation(backup_count=2, daily=True), clock=Clock(now))
    handler.write_block(b"today\n", 1)
    handler.close()
    assert Path(f"{path}.1").read_bytes() == b"yesterday\n"
    assert path.read_bytes() == b"today\n"


def test_rotated_files_older_than_max_age_are_deleted(tmp_path: Path) -> None:
    now = time.time()
    path = tmp_path / "m.log"
    ages = {"m.log.1": 1, "m.log.2": 6, "m.log.3.gz": 8, "m.log.4": 30}
    others = ["m.log.old", "m.log.1.gz.bak", "other.log.5", "m.log"]
    for name in [*ages, *others]:
        (tmp_path / name).write_bytes(b"x\n")
    for name, days in ages.items():
        os.utime(tmp_path / name, (now - days * DAY, now - days * DAY))
    for name in others:
        os.utime(tmp_path / name, (now - 30 * DAY, now - 30 * DAY))
    handler = LogFile(path, Rotation(backup_count=10, max_age=7 * DAY), clock=Clock(now))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.log.1", "m.log.2", *others])
    handler.close()


def test_pruning_also_happens_at_each_rotation(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=60, backup_count=10, max_age=DAY))
    handler.write_block(_lines(1), 1)
    handler.write_block(_lines(1, 1), 1)  # rotates: line 0 is in m.log.1
    two_days_ago = time.time() - 2 * DAY
    os.utime(f"{path}.1", (two_days_ago, two_days_ago))
    handler.write_block(_lines(1, 2), 1)  # rotates: line 0 moves to m.log.2, too old to keep
    handler.close()
    assert _numbers(Path(f"{path}.1").read_bytes()) == [1]
    assert not Path(f"{path}.2").exists()


def test_rotated_files_are_gzipped_complete_valid_and_private(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=5000, backup_count=100, compress=True))
    for start in range(0, 2000, 50):
        handler.write_block(_lines(50, start), 50)
    assert wait_idle(10)
    handler.close()
    rotated = rotated_files(path)
    assert len(rotated) >= 10 and all(p.suffix == ".gz" for p in rotated), rotated
    for packed in rotated:
        assert stat.S_IMODE(packed.stat().st_mode) == 0o600
        assert gzip.decompress(packed.read_bytes()).endswith(b"\n")
    assert _numbers(_read_all(path)) == list(range(2000))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, *(p.name for p in rotated)]
    )  # nothing pending, no partial .gz


def test_compression_keeps_the_count_of_backups(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=500, backup_count=3, compress=True))
    for start in range(0, 400, 10):
        handler.write_block(_lines(10, start), 10)
    assert wait_idle(10)
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", "m.log.1.gz", "m.log.2.gz", "m.log.3.gz"], names
    kept = _numbers(_read_all(path))
    assert kept == list(range(400 - len(kept), 400)), kept  # the newest, in order


def test_what_a_dead_supervisor_left_half_done_is_finished(tmp_path: Path) -> None:
    path = tmp_path / "m.log"
    (tmp_path / f"m.log.1000{PENDING}").write_bytes(_lines(3))
    (tmp_path / f"m.log.2000{PENDING}").write_bytes(_lines(3, 3))
    (tmp_path / "m.log.1.gz.tmp").write_bytes(b"half a gzip")
    (tmp_path / f"m.log.log.3000{PENDING}").write_bytes(b"module m.log's, not m's")
    handler = LogFile(path, Rotation(max_bytes=10_000, backup_count=5, compress=True))
    assert wait_idle(10)
    handler.write_block(_lines(3, 6), 3)
    handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", "m.log.1.gz", "m.log.2.gz", f"m.log.log.3000{PENDING}"], names
    assert _numbers(_read_all(path)) == list(range(9))


def test_a_failed_compression_keeps_the_file_uncompressed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(source: Path, target: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logrotate, "_compress", disk_full)
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=120, backup_count=5, compress=True))
    with caplog.at_level(logging.WARNING, logger="orchestrator.logrotate"):
        handler.write_block(_lines(2), 2)
        handler.write_block(_lines(2, 2), 2)
        assert wait_idle(10)
    handler.close()
    assert _numbers(Path(f"{path}.1").read_bytes()) == [0, 1]
    assert "cannot compress" in caplog.text and "(ENOSPC)); kept uncompressed" in caplog.text


def test_the_logging_section_reads_rotation_settings(tmp_path: Path) -> None:
    raw = {"rotate": "daily", "max_age": "7d", "compress": "gzip"}
    section = build_logging(raw, "config/main.yaml", "logging", tmp_path)
    assert (section.rotate, section.max_age, section.compress) == ("daily", 7 * DAY, "gzip")
    rotation = Rotation.from_settings(section)
    assert rotation == Rotation(10 << 20, 5, daily=True, max_age=7 * DAY, compress=True)
    for text, seconds in (("90s", 90), ("30m", 1800), ("1.5h", 5400), ("2w", 14 * DAY)):
        built = build_logging({"max_age": text}, "config/main.yaml", "logging", tmp_path)
        assert built.max_age == seconds
    with pytest.raises(ConfigError, match=r"logging\.max_age: expected a duration"):
        build_logging({"max_age": "soon"}, "config/main.yaml", "logging", tmp_path)


def test_rotations_faster_than_compression_keep_the_disk_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A module that fills a file faster than gzip packs one: the files set aside beyond what
    `backup_count` keeps are deleted, not queued (they would be shifted away anyway)."""
    compress, release = logrotate._compress, threading.Event()

    def stuck(source: Path, target: Path) -> None:
        release.wait(30)
        compress(source, target)

    monkeypatch.setattr(logrotate, "_compress", stuck)
    path = tmp_path / "m.log"
    handler = LogFile(path, Rotation(max_bytes=500, backup_count=3, compress=True))
    try:
        with caplog.at_level(logging.WARNING, logger="orchestrator.logrotate"):
            for start in range(0, 1000, 10):  # about 100 rotations while the first is packed
                handler.write_block(_lines(10, start), 10)
                files = list(tmp_path.iterdir())
                assert len(files) <= 1 + 1 + 3, sorted(f.name for f in files)  # + one packing
            release.set()
            assert wait_idle(10)
    finally:
        release.set()
        handler.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", "m.log.1.gz", "m.log.2.gz", "m.log.3.gz"], names
    kept = _numbers(_read_all(path))
    assert kept == list(range(1000 - len(kept), 1000)), kept  # the newest, in order
    assert caplog.text.count("deleted uncompressed") == 1, caplog.text


def test_a_dead_supervisors_backlog_is_not_compressed_only_to_be_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compress, packed = logrotate._compress, []

    def counted(source: Path, target: Path) -> None:
        packed.append(source.name)
        compress(source, target)

    monkeypatch.setattr(logrotate, "_compress", counted)
    path = tmp_path / "m.log"
    for n in range(10):
        (tmp_path / f"m.log.{1000 + n}{PENDING}").write_bytes(_lines(3, 3 * n))
    handler = LogFile(path, Rotation(max_bytes=10_000, backup_count=3, compress=True))
    assert wait_idle(10)
    handler.close()
    assert packed == [f"m.log.{1000 + n}{PENDING}" for n in (7, 8, 9)]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["m.log", "m.log.1.gz", "m.log.2.gz", "m.log.3.gz"], names
    assert _numbers(_read_all(path)) == list(range(21, 30))
