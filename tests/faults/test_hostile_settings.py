"""Settings that no syscall, clock or answer could carry are refused at load: `up -d` exits 3
with one line naming the file and the field (or line), and nothing starts. Each of them, before,
got through: some to kill the supervisor on its first `status`, some to loop a module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from project import Project, describe

from orchestrator.cli.common import CWD_GONE

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


def test_a_relative_run_base_is_taken_from_where_the_command_runs(project: Project) -> None:
    """Modules run in their project's directory: relative ipc paths, taken from there, named a
    place none of them could reach, so every module died (exit 73, no spec from the supervisor)."""
    project.configure([{"name": "m", "path": project.probe("idle")}])
    elsewhere = project.root / "elsewhere"
    elsewhere.mkdir()
    project.env["ORCHESTRATOR_RUN_BASE"] = "../run"  # from elsewhere: project.run_base
    try:
        result = _cli_in(project, elsewhere, "up", "-d", "-c", str(project.config_dir))
        assert result.returncode == 0, describe(result)
        assert f"ipc://{project.run_base}/" in result.stdout, result.stdout
    finally:
        _cli_in(project, elsewhere, "down", "-c", str(project.config_dir))


@pytest.mark.parametrize("where", ["ORCHESTRATOR_RUN_BASE", "TMPDIR"])
def test_a_run_base_too_long_for_a_socket_is_one_line(project: Project, where: str) -> None:
    project.configure([{"name": "m", "path": project.probe("idle")}])
    deep = project.root / ("r" * 90)
    deep.mkdir()
    if where == "TMPDIR":  # falls back to /tmp
        del project.env["ORCHESTRATOR_RUN_BASE"]
        project.env.pop("XDG_RUNTIME_DIR", None)
        project.env["TMPDIR"] = str(deep)
        status = project.cli("status", check=4)
        assert status.stderr.startswith("Error: no supervisor is running for"), describe(status)
        return
    project.env["ORCHESTRATOR_RUN_BASE"] = str(deep)
    for command in (["up", "-d"], ["status"], ["down"]):
        result = project.cli(*command, check=1)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, describe(result)
        assert lines[0].startswith(f"Error: ORCHESTRATOR_RUN_BASE ({deep}): too long"), lines
    assert project.processes() == []


def _cli_in(project: Project, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`orchestrator ARGS`, run in directory `cwd`."""
    return _run(project, cwd, sys.executable, "-m", "orchestrator", *args)


def _run(project: Project, cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=project.env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def _from_removed_directory(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """`orchestrator ARGS`, run in a working directory removed before it starts."""
    gone = project.root / "gone"
    gone.mkdir(exist_ok=True)
    script = 'cd "$0" && rmdir "$0" && exec "$@"'
    command = [sys.executable, "-m", "orchestrator", *args]
    return _run(project, project.root, "sh", "-c", script, str(gone), *command)


def test_a_removed_working_directory_is_said_once_and_absolute_paths_still_work(
    project: Project,
) -> None:
    project.configure([{"name": "m", "path": project.probe("idle")}])
    for relative in (["status"], ["status", "-c", "../p"]):
        result = _from_removed_directory(project, *relative)
        assert result.returncode == 3, describe(result)
        assert result.stderr == f"Error: {CWD_GONE}\n", describe(result)
    config = str(project.config_dir)
    try:
        result = _from_removed_directory(project, "up", "-d", "-c", config)
        assert result.returncode == 0, describe(result)
        result = _from_removed_directory(project, "status", "-c", config)
        assert result.returncode == 0 and " running " in result.stdout, describe(result)
    finally:
        result = _from_removed_directory(project, "down", "-c", config)
    assert result.returncode == 0 and result.stdout.startswith("stopped"), describe(result)
    result = _from_removed_directory(project, "init", str(project.root / "new"))
    assert result.returncode == 0, describe(result)
    result = _from_removed_directory(project, "init", "relative")
    assert result.returncode == 1, describe(result)
    assert result.stderr.startswith("Error: the current directory no longer exists"), result.stderr
    assert len(result.stderr.splitlines()) == 1, describe(result)


def test_a_project_path_that_is_not_utf8_is_refused_at_up_in_one_line(project: Project) -> None:
    """Endpoints and the supervisor's messages carry paths as UTF-8: such a project's `up`
    failed at the first module with a codec error (status and down cope with it)."""
    project.configure([{"name": "m", "path": project.probe("idle")}])
    odd = Path(os.fsdecode(bytes(project.root) + b"/bad\xff\xfename"))
    shutil.copytree(project.config_dir, odd / "config")
    shutil.copytree(project.root / "modules", odd / "modules")
    for args in (["up", "-d"], ["up"]):
        result = _cli_in(project, project.root, *args, "-c", str(odd / "config"))
        assert result.returncode == 3, describe(result)
        assert result.stderr.count("\n") == 1 and "not valid UTF-8" in result.stderr, result.stderr
        assert "\\xff\\xfe" in result.stderr, result.stderr
    assert project.processes() == []
