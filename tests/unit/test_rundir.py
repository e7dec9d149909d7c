"""Where a run directory goes when ORCHESTRATOR_RUN_BASE does not say."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import wait_until

from orchestrator.rundir import RunBaseError, RunDir


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ORCHESTRATOR_RUN_BASE", "XDG_RUNTIME_DIR", "TMPDIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_run_base_variable_wins(no_overrides: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", str(tmp_path / "base"))
    no_overrides.setenv("TMPDIR", str(tmp_path))
    assert RunDir(tmp_path).path.parent == tmp_path / "base"


def test_xdg_runtime_dir_comes_before_tmpdir(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # it is used only if short
        no_overrides.setenv("XDG_RUNTIME_DIR", short)
        no_overrides.setenv("TMPDIR", str(tmp_path))
        assert RunDir(tmp_path).path.parent == Path(short) / "orchestrator"


def test_tmpdir_is_used_when_it_exists(no_overrides: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths must stay short
        no_overrides.setenv("TMPDIR", short)
        assert RunDir(tmp_path).path.parent == Path(short) / f"orchestrator-{os.getuid()}"


def test_a_missing_tmpdir_falls_back_to_tmp(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_overrides.setenv("TMPDIR", str(tmp_path / "gone"))
    assert RunDir(tmp_path).path.parent == Path("/tmp") / f"orchestrator-{os.getuid()}"


def test_a_relative_tmpdir_is_made_absolute(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths must stay short
        no_overrides.chdir(short)
        Path(short, "t").mkdir()
        no_overrides.setenv("TMPDIR", "t")
        assert RunDir(tmp_path).path.parent == Path(short, "t", f"orchestrator-{os.getuid()}")


def test_a_relative_run_base_is_made_absolute(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Modules run in their project's directory: a relative ipc path there named a place none of
    them could reach, and every module died waiting for its spec."""
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths must stay short
        no_overrides.chdir(short)
        no_overrides.setenv("ORCHESTRATOR_RUN_BASE", "relrun")
        run_dir = RunDir(tmp_path / "config")
        assert run_dir.path.parent == Path(short, "relrun")
        assert run_dir.xsub == f"ipc://{short}/relrun/{run_dir.path.name}/xsub.sock"


def test_a_relative_xdg_runtime_dir_is_ignored(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The XDG base directory spec: a relative path in it is invalid, to be ignored."""
    no_overrides.chdir(tmp_path)
    (tmp_path / "xdg").mkdir()
    no_overrides.setenv("XDG_RUNTIME_DIR", "xdg")
    assert RunDir(tmp_path).path.parent == Path("/tmp") / f"orchestrator-{os.getuid()}"


def test_a_relative_run_base_in_a_removed_directory_says_so(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    no_overrides.chdir(gone)
    gone.rmdir()
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", "relrun")
    with pytest.raises(RunBaseError, match=r"ORCHESTRATOR_RUN_BASE \(relrun\) is relative"):
        RunDir(tmp_path / "config")


@pytest.mark.parametrize(
    "tail",
    [
        "r" * 90,
        "漢" * 25,  # 69 characters, 119 bytes: it is bytes that must fit
    ],
)
def test_a_run_base_too_long_for_sockets_is_an_error_naming_it(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path, tail: str
) -> None:
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", f"/tmp/x/{tail}")
    with pytest.raises(RunBaseError, match=r"^ORCHESTRATOR_RUN_BASE \(/tmp/x/.*too long"):
        RunDir(tmp_path)


def test_the_longest_run_base_that_fits_is_taken(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    longest = "/" + "r" * 76  # 77 bytes, and /<key>/control.sock after it: 107
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", longest)
    assert len((RunDir(tmp_path).path / "control.sock").as_posix()) == 107
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", longest + "r")
    with pytest.raises(RunBaseError):
        RunDir(tmp_path)


def test_a_tmpdir_too_long_for_sockets_falls_back_to_tmp(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deep = tmp_path / ("t" * 100)
    deep.mkdir()
    no_overrides.setenv("TMPDIR", str(deep))
    assert RunDir(tmp_path).path.parent == Path("/tmp") / f"orchestrator-{os.getuid()}"


def test_a_run_base_that_is_not_utf8_is_an_error_and_such_a_tmpdir_passed_over(
    no_overrides: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ZeroMQ endpoints are UTF-8 text: `up` ended in a UnicodeEncodeError traceback (a review)."""
    odd = os.fsdecode(bytes(tmp_path) + b"/run\xff")
    no_overrides.setenv("ORCHESTRATOR_RUN_BASE", odd)
    with pytest.raises(RunBaseError, match=r"run\\xff\): not valid UTF-8"):
        RunDir(tmp_path)
    no_overrides.delenv("ORCHESTRATOR_RUN_BASE")
    os.mkdir(odd)
    no_overrides.setenv("TMPDIR", odd)
    assert RunDir(tmp_path).path.parent == Path("/tmp") / f"orchestrator-{os.getuid()}"


def test_the_key_of_a_utf8_path_is_what_it_was() -> None:
    """A supervisor started by the previous version must still be found: the key is the FNV-1a
    hash of the UTF-8 bytes of the config directory's real path, as it always was."""
    assert RunDir(Path("/srv/shop/config"), Path("/run")).path.name == "adf198382f1667af"
    assert RunDir(Path("/srv/caf\u00e9/config"), Path("/run")).path.name == "65350713b0e0db65"


def test_a_path_that_is_not_utf8_has_a_run_directory(tmp_path: Path) -> None:
    """Its name holds bytes no str encodes (surrogate escapes): it is hashed as bytes."""
    config = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff\xfename"))
    run_dir = RunDir(config, tmp_path / "run")
    assert run_dir.path.name != RunDir(tmp_path / "other", tmp_path / "run").path.name
    run_dir.prepare()
    assert run_dir.path.is_dir()


# Asks "is a supervisor running?" as fast as it can, as a CLI polling `status` does.
PROBE = """
import sys, time
from pathlib import Path
from orchestrator.rundir import RunDir
run_dir = RunDir(Path(sys.argv[1]), Path(sys.argv[2]))
print("probing", flush=True)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    run_dir.running_pid()
"""


def test_a_cli_asking_whether_one_runs_never_makes_a_start_fail(tmp_path: Path) -> None:
    config, base = tmp_path / "config", tmp_path / "run"
    config.mkdir()
    run_dir = RunDir(config, base)
    run_dir.prepare()
    (run_dir.path / "supervisor.lock").touch()  # as a killed supervisor leaves it
    probes = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE, str(config), str(base), "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for probe in probes:
            assert probe.stdout is not None and probe.stdout.readline() == "probing\n"
        for _ in range(300):
            run_dir.acquire()  # raised AlreadyRunningError(None) now and then
            run_dir.release()
    finally:
        for probe in probes:
            probe.kill()
            probe.wait()


def test_a_zombie_is_not_a_live_process() -> None:
    """A killed supervisor's process waits, reparented, to be reaped: it holds nothing."""
    import os

    from orchestrator.rundir import process_alive

    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os._exit(0)
    try:
        assert process_alive(os.getpid())
        # Exited but not reaped: a zombie until waitid below (WNOWAIT: look, do not reap).
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert not process_alive(pid)
    finally:
        os.waitpid(pid, 0)
    assert not process_alive(pid)


@pytest.mark.parametrize("name", ["supervisor.lock", "supervisor.pid", "supervisor.out"])
@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_fifo_or_link_in_the_run_directory_is_refused_not_waited_on(
    tmp_path: Path, name: str, kind: str
) -> None:
    """Opening a FIFO blocks until its other end opens: `status`, `down` and `up` hung on one a
    module running as us had put there. They now say what is there, or that nothing runs (a
    supervisor of ours only ever locks the regular file it made). Hanging fails on the timeout."""
    from orchestrator.rundir import UnsafeRunDirError

    config = tmp_path / "config"
    config.mkdir()
    run_dir = RunDir(config, tmp_path / "run")
    run_dir.prepare()
    target = run_dir.path / name
    target.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(target)
    else:
        (tmp_path / "elsewhere").write_text(f"{os.getpid()}\n")
        target.symlink_to(tmp_path / "elsewhere")
    assert run_dir.running_pid() is None
    assert run_dir.stale_pid() is None
    with pytest.raises(UnsafeRunDirError, match=f"{name}: not a regular file"):
        run_dir.prepare()
    with pytest.raises(UnsafeRunDirError, match=f"{name}: not a regular file"):
        run_dir.acquire()
    assert target.is_symlink() if kind == "link" else target.is_fifo()  # left for its owner


def test_a_stopped_process_is_told_apart() -> None:
    """A supervisor stopped by SIGSTOP cannot answer: the CLI says so (and how to resume it)."""
    import signal

    from orchestrator.rundir import process_stopped

    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert not process_stopped(sleeper.pid)
        os.kill(sleeper.pid, signal.SIGSTOP)
        wait_until(lambda: process_stopped(sleeper.pid), 5, "the stopped state")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not process_stopped(sleeper.pid)  # gone


def test_a_config_path_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "-c", str(tmp_path / ("a" * 300))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.strip().endswith("File name too long"), result.stderr
