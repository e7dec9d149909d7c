"""The module's end of the lifeline: end-of-file only when the supervisor is gone, never another
file that took its descriptor's number; once lost, the supervisor's process says."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from module_sdk.lifeline import Lifeline


def test_open_while_the_writer_lives_and_gone_once_it_closes() -> None:
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end, os.getpid())
    try:
        assert lifeline.gone() is False
        os.close(write_end)
        assert lifeline.gone() is True and not lifeline.lost
    finally:
        os.close(read_end)


def test_a_closed_descriptor_is_lost_and_the_supervisor_process_answers() -> None:
    supervisor = subprocess.Popen(["sleep", "60"])
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end, supervisor.pid)
    os.close(read_end)
    try:
        assert lifeline.gone() is False and lifeline.lost  # its process lives
        supervisor.kill()
        supervisor.wait(10)
        assert lifeline.gone() is True
    finally:
        os.close(write_end)
        supervisor.kill()
        supervisor.wait(10)


def test_a_killed_supervisor_not_yet_reaped_is_gone() -> None:
    # A zombie keeps its /proc entry and its start time until it is reaped: a module watching
    # its supervisor's process took it for alive, and outlived it (seen on a busy CI machine).
    supervisor = subprocess.Popen(["sleep", "60"])
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end, supervisor.pid)
    os.close(read_end)
    try:
        assert lifeline.gone() is False and lifeline.lost
        supervisor.kill()
        os.waitid(os.P_PID, supervisor.pid, os.WEXITED | os.WNOWAIT)  # dead, left a zombie
        assert lifeline.gone() is True
    finally:
        os.close(write_end)
        supervisor.kill()
        supervisor.wait(10)


def test_another_file_under_its_number_is_not_read() -> None:
    read_end, write_end = os.pipe()
    lifeline = Lifeline(read_end, os.getpid())
    os.close(read_end)
    other_read, other_write = os.pipe()
    if other_read != read_end:  # the lowest free number: usually the lifeline's already
        os.dup2(other_read, read_end)
    os.write(other_write, b"mine")  # the module's own pipe, readable, under the lifeline's number
    try:
        assert lifeline.gone() is False and lifeline.lost
        assert os.read(read_end, 4) == b"mine"  # nothing of it consumed
    finally:
        for fd in {read_end, write_end, other_read, other_write}:
            os.close(fd)


def test_a_descriptor_not_open_at_the_start_is_lost_from_the_start() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    lifeline = Lifeline(read_end, os.getpid())
    assert lifeline.lost and lifeline.gone() is False


def test_the_orphans_last_line_never_waits_on_a_fifo(tmp_path: Path) -> None:
    """The line saying the supervisor went away is written before the module stops: a FIFO in
    place of its log file must not keep it alive, orphaned (hanging fails on the timeout)."""
    import threading
    from types import SimpleNamespace

    from module_sdk.shim import _Child

    log = tmp_path / "m.log"
    os.mkfifo(log)
    shim = SimpleNamespace(
        log_path=log,
        orphan_noted=threading.Lock(),
        parent_pid=1,
        name="m",
        formatter=lambda: __import__("logging").Formatter("%(message)s"),
    )
    _Child.note_orphaned(shim)  # type: ignore[arg-type]
    assert shim.orphan_noted.locked()  # it did try, once
