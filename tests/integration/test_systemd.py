"""Under systemd: the supervisor's notifications on a real notify socket, and the unit it prints."""

from __future__ import annotations

import configparser
import contextlib
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import wait_until
from project import Project


def test_up_in_the_foreground_notifies_systemd(project: Project, tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(0.05)
    said: list[str] = []
    done = threading.Event()

    # Read all the time, as systemd does: a unix datagram queue holds only
    # net.unix.max_dgram_qlen messages (10 by default), past which the supervisor's
    # non-blocking notifications are dropped, so a test reading late would miss STOPPING=1.
    def read() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError, BlockingIOError):
                said.extend(sock.recv(4096).decode().splitlines())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def heard(line: str) -> bool:
        return line in said

    try:
        project.configure([{"name": "idle", "path": project.probe("idle")}])
        project.env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="300000")
        proc = project.start_foreground()
        wait_until(lambda: heard("READY=1"), 15, "READY=1", lambda: f"{said}")
        assert project.module("idle")["state"] == "running"  # ready means started
        assert "STATUS=1 module: 1 running" in said, said
        pings = said.count("WATCHDOG=1")
        wait_until(lambda: said.count("WATCHDOG=1") >= pings + 2, 5, "watchdog pings from the loop")
        environ = Path(f"/proc/{project.module('idle')['pid']}/environ").read_bytes()
        assert b"NOTIFY_SOCKET" not in environ and b"WATCHDOG_USEC" not in environ
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: heard("STOPPING=1"), 5, "STOPPING=1", lambda: f"{said}")
        assert said.index("STOPPING=1") > said.index("READY=1")
    finally:
        done.set()
        reader.join(5)
        sock.close()


def test_systemd_unit_prints_a_unit_that_runs_this_project(project: Project) -> None:
    project.configure([])
    text = project.cli("systemd-unit", check=0).stdout
    unit = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    service = unit["Service"]
    assert (service["Type"], service["KillMode"], service["Restart"]) == (
        "notify",
        "mixed",
        "on-failure",
    )
    config = str(project.config_dir.resolve())
    assert service["ExecStart"].endswith(f" up -c {config}"), service["ExecStart"]
    assert Path(service["ExecStart"].split()[0]).is_file()
    assert service["WorkingDirectory"] == str(project.root.resolve())
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    user = project.cli("systemd-unit", "--user", check=0).stdout
    assert "WantedBy=default.target" in user and "User=" not in user
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze to verify the unit with")
    unit_file = project.root / "orchestrator-test.service"
    unit_file.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(unit_file)], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and "ignoring" not in result.stderr, result.stderr


@pytest.mark.parametrize("odd", ["a b", "v%hx", "c$d", 'q"uo\\te'])
def test_a_unit_for_a_path_systemd_would_read_otherwise(tmp_path: Path, odd: str) -> None:
    """systemd expands `%h` and `$X` in a unit, unescapes C-style inside quotes, and reads a
    newline as the next setting: a project at such a path got a unit that ran something else,
    or none."""
    from orchestrator.cli.systemd_unit import _quoted, unit_text
    from orchestrator.config import load_config

    project = tmp_path / odd
    (project / "config").mkdir(parents=True)
    (project / "config" / "main.yaml").write_text("app: {name: demo}\n")
    (project / "config" / "modules.yaml").write_text("modules: []\n")
    text = unit_text(load_config(project / "config"), user_unit=True)
    word = _quoted(str((project / "config").resolve()))
    assert f" up -c {word}\n" in text
    assert "%" not in text.replace("%%", "")  # a specifier, in any setting
    commands = [line for line in text.splitlines() if line.startswith("Exec")]
    assert all("$" not in line.replace("$$", "") for line in commands)  # a variable there
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        unit_file = tmp_path / "odd.service"
        unit_file.write_text(text)
        result = subprocess.run(
            [analyze, "verify", str(unit_file)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0 and "ignoring" not in result.stderr, result.stderr
    newline = tmp_path / "new\nline"
    (newline / "config").mkdir(parents=True)
    for name, body in (("main.yaml", "app: {name: demo}\n"), ("modules.yaml", "modules: []\n")):
        (newline / "config" / name).write_text(body)
    with pytest.raises(ValueError, match="control character"):
        unit_text(load_config(newline / "config"), user_unit=True)
