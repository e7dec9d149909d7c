"""Settings that no syscall, clock or answer could carry are refused at load: `up -d` exits 3
with one line naming the file and the field (or line), and nothing starts. Each of them, before,
got through: some to kill the supervisor on its first `status`, some to loop a module."""

from __future__ import annotations

import os
from typing import Any

import pytest
from project import Project

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (module entry keys, the file named, what the line says)
    "infinite timeout": ({"start_timeout": float("inf")}, "modules.yaml", "at most 1e+09, got inf"),
    "an integer beyond floats": (
        {"stop_timeout": 10**400},
        "modules.yaml",
        "stop_timeout: expected a number > 0, at most 1e+09",
    ),
    "rlimit beyond 2**63": (
        {"rlimits": {"as": [10**30, 10**30]}},
        "modules.yaml",
        "rlimits.as[0]: expected an integer between 0 and",
    ),
    "env name with =": ({"env": {"A=B": "1"}}, "modules.yaml", "env.A=B: expected a variable"),
    "NUL in a path": ({"path": "mods/a\0b.py"}, "modules.yaml", "path: a NUL character cannot be"),
    "FIFO as module": ({"path": "fifo.py"}, "modules.yaml", "fifo.py is not a regular file"),
    "unparsable .env": ({}, ".env", "line 1: cannot parse it"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_setting_no_syscall_can_carry_is_one_line_and_nothing_starts(
    project: Project, case: str
) -> None:
    keys, file, said = CASES[case]
    os.mkfifo(project.root / "modules" / "fifo.py")
    entry = {"name": "m", "path": project.probe("idle"), **keys}
    if entry["path"] == "fifo.py":
        entry["path"] = str(project.root / "modules" / "fifo.py")
    project.configure([entry, {"name": "other", "path": project.probe("idle")}])
    if file == ".env":
        (project.config_dir / ".env").write_text("MY TOKEN=s3cret\n")
    result = project.cli("up", "-d", check=3)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and file in lines[0] and said in lines[0], result.stderr
    assert "s3cret" not in result.stderr
    assert project.processes() == []


MAIN_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "a newline in app.name": (
        {"app": {"name": "shop\nINFO forged"}},
        "app.name: expected one line",
    ),
    "a header with CR LF": (
        {"notifications": {"webhooks": [{"url": "http://h/x", "headers": {"X": "a\r\nB: 1"}}]}},
        "headers.X: a header value cannot hold control characters",
    ),
    "a huge high_water_mark": ({"bus": {"high_water_mark": 10**12}}, "bus.high_water_mark"),
    # Each of these kept the supervisor at 95% CPU, or a log from ever rotating by size.
    "a heartbeat every 100 ns": (
        {"supervision": {"heartbeat_interval": 1e-7}},
        "supervision.heartbeat_interval: expected a number >= 0.05",
    ),
    "a health check every 100 ns": (
        {"supervision": {"health_interval": 1e-7}},
        "supervision.health_interval: expected a number >= 0.05",
    ),
    "a usage line every 100 ns": (
        {"resources": {"usage_log_interval": 1e-7}},
        "resources.usage_log_interval: expected a number >= 1",
    ),
    "a log file size under a byte": (
        {"logging": {"max_file_size_mb": 1e-7}},
        "logging.max_file_size_mb: expected a number >= 0.001",
    ),
}


@pytest.mark.parametrize("case", list(MAIN_CASES))
def test_a_main_setting_no_syscall_or_protocol_can_carry_is_one_line(
    project: Project, case: str
) -> None:
    main, said = MAIN_CASES[case]
    project.configure([{"name": "m", "path": project.probe("idle")}], **main)
    result = project.cli("up", "-d", check=3)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "main.yaml" in lines[0] and said in lines[0], result.stderr
    assert project.processes() == []


def test_a_log_directory_that_can_never_take_a_file_is_refused_at_start(project: Project) -> None:
    # /proc/1 exists, and no file can be made there (as root: ENOENT; else: EACCES). A disk that
    # fills up later is another matter: lines lost, counted, written again (test_log_disk_full).
    project.configure(
        [{"name": "m", "path": project.probe("idle")}], logging={"directory": "/proc/1"}
    )
    result = project.cli("up", "-d", check=3)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "logging.directory: cannot write logs in /proc/1" in lines[0], lines
    assert project.processes() == []
