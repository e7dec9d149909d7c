"""The CLI from any directory, and commands that agree: -c before or after the command, one
answer for a missing config directory, one exit code for an unknown module, `down` with nothing
running, two `up -d` at once, and --json wherever a command prints a result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import wait_until
from project import Project, describe

from orchestrator import exit_codes
from orchestrator.daemon import PROCESS_NAME
from orchestrator.rundir import RunDir

WITH_TESTS = """
def initialize(event_bus, config):
    pass


def shutdown():
    pass


def get_tests():
    return ["tests"]
"""


def orchestrator(
    project: Project, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`orchestrator ARGS` exactly as given (no -c added), run in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=env or project.env,
        cwd=cwd,
    )


def started(project: Project, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=project.env,
        cwd=cwd,
    )


def finished(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def idle_project(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])


def test_config_before_or_after_the_command_from_another_directory(project: Project) -> None:
    idle_project(project)
    elsewhere = project.root / "elsewhere"
    elsewhere.mkdir()
    config = str(project.config_dir)
    relative = "../config"  # from `elsewhere`: a detached supervisor must still find it
    result = orchestrator(project, "-c", relative, "up", "-d", cwd=elsewhere)
    assert result.returncode == 0, describe(result)
    before = orchestrator(project, "-c", config, "status", "--json", cwd=Path("/"))
    after = orchestrator(project, "status", "--json", "-c", config, cwd=Path("/"))
    for result in (before, after):
        assert result.returncode == 0, describe(result)
        assert json.loads(result.stdout)["modules"][0]["state"] == "running"
    # Given in both places, the one after the command wins; either way beats the environment.
    missing = str(project.root / "missing")
    wins = orchestrator(project, "-c", missing, "status", "-c", config, cwd=Path("/"))
    assert wins.returncode == 0, describe(wins)
    loses = orchestrator(project, "-c", config, "status", "-c", missing, cwd=Path("/"))
    assert loses.returncode == exit_codes.BAD_CONFIG and missing in loses.stderr, describe(loses)
    env = dict(project.env, ORCHESTRATOR_CONFIG=missing)
    over_env = orchestrator(project, "-c", config, "status", cwd=Path("/"), env=env)
    assert over_env.returncode == 0, describe(over_env)
    down = orchestrator(project, "-c", relative, "down", cwd=elsewhere)
    assert down.returncode == 0 and "stopped" in down.stdout, describe(down)


NEEDS_CONFIG = [
    ["up", "-d"],
    ["up"],
    ["down"],
    ["status"],
    ["status", "idle"],
    ["restart", "idle"],
    ["stop", "idle"],
    ["start", "idle"],
    ["reload"],
    ["test"],
    ["test", "idle"],
    ["logs", "idle"],
    ["scale", "idle", "2"],
    ["run", "idle"],
    ["events", "--timeout", "1"],
    ["publish", "probe.note"],
    ["new", "fresh"],
    ["new", "fresh", "--add"],
]


def test_no_config_directory_is_exit_3_with_its_absolute_path_in_every_command(
    project: Project,
) -> None:
    empty = project.root / "empty"
    empty.mkdir()
    runs = {" ".join(args): started(project, *args, cwd=empty) for args in NEEDS_CONFIG}
    runs["-c nowhere status"] = started(project, "-c", "nowhere", "status", cwd=empty)
    for command, proc in runs.items():
        result = finished(proc)
        looked_in = empty / ("nowhere" if "nowhere" in command else "config")
        assert result.returncode == exit_codes.BAD_CONFIG, f"{command}: {describe(result)}"
        assert f"no config directory at {looked_in};" in result.stderr, (
            f"{command}: {describe(result)}"
        )
        assert "-c DIR" in result.stderr and "ORCHESTRATOR_CONFIG" in result.stderr, command
        assert "no supervisor" not in result.stderr, command
    assert list(empty.iterdir()) == []  # `new` wrote nothing beside no project


def test_a_directory_that_holds_no_config_is_exit_3_while_the_project_runs(
    project: Project,
) -> None:
    """`-c` given the project's module directory: `down` said "nothing was running" (exit 0),
    `status` "no supervisor" (exit 4), `up -d` "modules.yaml: file not found", while the project
    ran. A config directory whose modules.yaml was removed under its supervisor still reaches
    it."""
    idle_project(project)
    pid = project.up()["supervisor"]["pid"]
    modules = project.root / "modules"
    for args in (["down"], ["status"], ["up", "-d"], ["start", "idle"], ["logs", "idle"]):
        result = orchestrator(project, *args, "-c", str(modules), cwd=project.root)
        assert result.returncode == exit_codes.BAD_CONFIG, f"{args}: {describe(result)}"
        said = f"no config directory at {modules} (it holds no modules.yaml, the list of modules"
        assert said in result.stderr, f"{args}: {describe(result)}"
    (project.config_dir / "modules.yaml").unlink()
    assert project.status()["supervisor"]["pid"] == pid
    project.cli("down", check=0)
    result = project.cli("status", check=exit_codes.BAD_CONFIG)  # nothing runs for it now
    assert "(it holds no modules.yaml, the list of modules to run)" in result.stderr, describe(
        result
    )


def test_an_unknown_module_is_a_usage_error_in_every_command(project: Project) -> None:
    idle_project(project)
    for command in (["status", "nope"], ["restart", "nope"]):  # nothing running yet
        result = project.cli(*command, check=exit_codes.USAGE)
        assert "named 'nope'" in result.stderr and "idle" in result.stderr, describe(result)
    assert project.cli("status", "idle").returncode == exit_codes.NOT_RUNNING
    project.up()
    unknown = (["status", "nope"], ["restart", "nope"], ["stop", "nope"], ["start", "nope"])
    for command in (
        *unknown,
        ["logs", "nope"],
        ["test", "nope"],
        ["scale", "nope", "2"],
        ["run", "nope"],
    ):
        result = project.cli(*command, check=exit_codes.USAGE)
        assert "named 'nope'" in result.stderr and "idle" in result.stderr, describe(result)
    # An instance of a module without instances: no module, whichever command is asked.
    for command in (["status", "idle#1"], ["restart", "idle#1"], ["logs", "idle#1"]):
        result = project.cli(*command, check=exit_codes.USAGE)
        assert "named 'idle#1'" in result.stderr and "idle" in result.stderr, describe(result)
    # Added to modules.yaml, not reloaded yet: unknown to the supervisor, which is said.
    modules = project.config_dir / "modules.yaml"
    modules.write_text(modules.read_text() + "- {name: extra, path: ../modules/idle.py}\n")
    for command in (["start", "extra"], ["status", "extra"]):
        result = project.cli(*command, check=exit_codes.USAGE)
        hint = "extra is in modules.yaml but not in the running config: run `orchestrator reload`"
        assert hint in result.stderr, describe(result)
    # A known module that does exist is not a usage error.
    project.cli("status", "idle", check=0)


def test_down_with_nothing_running_is_not_an_error(project: Project) -> None:
    idle_project(project)
    result = project.cli("down", check=0)
    assert result.stdout.startswith("nothing was running"), describe(result)
    assert result.stderr == ""
    as_json = project.cli("down", "--json", check=0)
    assert json.loads(as_json.stdout) == {"was_running": False, "supervisor": {"pid": None}}


def test_two_up_at_once_start_exactly_one_supervisor(project: Project) -> None:
    idle_project(project)
    for _ in range(3):
        racers = [started(project, "up", "-d", "-c", str(project.config_dir), cwd=project.root)]
        racers.append(started(project, "up", "-d", "-c", str(project.config_dir), cwd=project.root))
        results = [finished(proc) for proc in racers]
        codes = sorted(result.returncode for result in results)
        assert codes == [0, 1], "\n".join(map(describe, results))
        supervisors = [p for p in project.processes() if p.name() == PROCESS_NAME]
        assert len(supervisors) == 1, supervisors
        loser = next(result for result in results if result.returncode == 1)
        running = f"already running for {project.config_dir} (pid {supervisors[0].pid})"
        assert running in loser.stderr, describe(loser)
        foreground = project.cli("up", check=exit_codes.FAILED)  # it finds out as it locks
        assert running in foreground.stderr, describe(foreground)
        project.cli("down", check=0)


def test_json_output_parses_for_each_command_that_has_it(project: Project) -> None:
    root = project.root / "modules" / "tested"
    (root / "tests").mkdir(parents=True)
    (root / "__init__.py").write_text(WITH_TESTS)
    (root / "tests" / "test_it.py").write_text("def test_passes():\n    assert True\n")
    project.configure(
        [
            {"name": "idle", "path": project.probe("idle")},
            {"name": "tested", "path": "../modules/tested"},
        ]
    )

    def document(*args: str) -> Any:
        result = project.cli(*args, "--json", check=0)
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"{' '.join(args)} --json: not one JSON document\n{describe(result)}")

    started = document("up", "-d")
    assert {m["name"]: m["state"] for m in started["modules"]} == {
        "idle": "running",
        "tested": "running",
    }
    assert started.keys() == document("status").keys()
    assert project.cli("up", "--json").returncode == exit_codes.USAGE  # needs -d

    status = document("status", "idle")
    restarted = document("restart", "idle")
    assert restarted.keys() == status.keys()
    (row,) = restarted["modules"]
    assert row.keys() == status["modules"][0].keys()
    assert row["name"] == "idle" and row["state"] == "running" and row["restarts"] == 1
    (row,) = document("stop", "idle")["modules"]
    assert (row["state"], row["why"]) == ("stopped", "stopped by operator")
    (row,) = document("start", "idle")["modules"]
    assert (row["state"], row["why"]) == ("running", "")
    assert document("reload", "--dry-run") == {
        "start": [],
        "stop": [],
        "restart": {},
        "unchanged": ["idle", "tested"],
        "not_applied": [],
        "dry_run": True,
    }
    published = document("publish", "probe.note")
    assert published["type"] == "probe.note" and isinstance(published["id"], str)
    tested = document("test")
    assert tested["passed"] is True and tested["total"]["passed"] == 1
    assert {m["name"]: m["tests"] for m in tested["modules"]} == {"tested": 1, "idle": None}
    pid = status["supervisor"]["pid"]
    assert document("down") == {"was_running": True, "supervisor": {"pid": pid}}


def test_pytest_is_installed_with_orchestrator_not_only_for_development() -> None:
    """`orchestrator test` runs pytest: a plain `pip install` must bring it."""
    from importlib.metadata import requires

    runtime = [r for r in requires("orchestrator") or [] if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("pytest>") for r in runtime), runtime


def test_a_test_run_in_which_pytest_itself_fails_is_not_passed(project: Project) -> None:
    """No test collected (pytest exit 5) fails `test` in its exit code, its table and its JSON."""
    root = project.root / "modules" / "untested"
    (root / "tests").mkdir(parents=True)
    (root / "__init__.py").write_text(WITH_TESTS)
    (root / "tests" / "test_nothing.py").write_text("# no test here yet\n")
    project.configure([{"name": "untested", "path": "../modules/untested"}])
    result = project.cli("test", "--json", check=exit_codes.FAILED)
    report = json.loads(result.stdout)
    assert report["passed"] is False and report["pytest_exit"] == 5, report
    table = project.cli("test", check=exit_codes.FAILED).stdout
    assert "FAILED: no test ran (pytest exit 5)" in table, table


def test_the_same_project_under_another_run_directory_is_refused(project: Project) -> None:
    # ORCHESTRATOR_RUN_BASE (or XDG_RUNTIME_DIR) differs between a shell, cron, sudo and a unit:
    # each found its own run directory, and the project ran twice, every module doubled.
    idle_project(project)
    first = project.up()["supervisor"]["pid"]
    other_env = dict(project.env, ORCHESTRATOR_RUN_BASE=str(project.root / "other-run"))
    for args in (("up", "-d"), ("up",)):
        config = ("-c", str(project.config_dir))
        result = orchestrator(project, *args, *config, cwd=project.root, env=other_env)
        assert result.returncode == 1, describe(result)
        assert f"a supervisor (pid {first}) already runs with the logs directory" in result.stderr
    assert [p.pid for p in project.processes() if p.name() == PROCESS_NAME] == [first]
    assert _with_run_base(other_env["ORCHESTRATOR_RUN_BASE"]) == []  # nothing of the other left


def test_the_project_lock_removed_with_the_logs_is_taken_again(project: Project) -> None:
    """`rm -rf logs` removed the lock with it: `up` with another run directory then started a
    second supervisor for the project, and both ran the same modules."""
    idle_project(project)
    first = project.up()["supervisor"]["pid"]
    lock = project.root / "logs" / ".supervisor.lock"
    before = lock.stat().st_ino
    shutil.rmtree(project.root / "logs")
    wait_until(lambda: lock.exists() and lock.stat().st_ino != before, 10, "the lock made again")
    wait_until(lambda: "made it again and locked it" in project.log("app"), 10, "its log line")
    other_env = dict(project.env, ORCHESTRATOR_RUN_BASE=str(project.root / "other-run"))
    config = ("-c", str(project.config_dir))
    result = orchestrator(project, "up", "-d", *config, cwd=project.root, env=other_env)
    assert result.returncode == 1, describe(result)
    assert f"a supervisor (pid {first}) already runs with the logs directory" in result.stderr
    assert _with_run_base(other_env["ORCHESTRATOR_RUN_BASE"]) == []


def test_down_and_status_through_another_run_directory_name_the_one_running(
    project: Project,
) -> None:
    """They said "nothing was running" (exit 0) and "no supervisor" (exit 4) while the project's
    supervisor ran, found through another run directory (or a project moved since `up`)."""
    idle_project(project)
    first = project.up()["supervisor"]["pid"]
    running_in = RunDir(project.config_dir, project.run_base).path
    other_env = dict(project.env, ORCHESTRATOR_RUN_BASE=str(project.root / "other-run"))
    config = ("-c", str(project.config_dir))
    for command in ("down", "status"):
        result = orchestrator(project, command, *config, cwd=project.root, env=other_env)
        assert result.returncode == 1, describe(result)
        said = f"Error: a supervisor (pid {first}) runs for this project with the run directory"
        assert result.stderr.startswith(f"{said} {running_in}, not "), describe(result)
    assert project.status()["supervisor"]["pid"] == first  # still running
    project.cli("down", check=0)
    result = orchestrator(project, "down", *config, cwd=project.root, env=other_env)
    assert (result.returncode, result.stdout) == (0, f"nothing was running for {config[1]}\n")


def test_a_project_whose_logs_move_at_the_next_up_is_still_found_through_another_run_directory(
    project: Project,
) -> None:
    """A reload's `logging.directory` applies at the next `up`, yet through another run
    directory `status` looked for the project's lock in the new directory (exit 4, "no
    supervisor") and `up -d` started a second supervisor; a config broken on disk made `down`
    say "nothing was running"."""
    idle_project(project)
    first = project.up()["supervisor"]["pid"]
    main = project.config_dir / "main.yaml"
    main.write_text(main.read_text().replace("directory: logs", "directory: logs2"))
    project.cli("reload", check=0)
    other_env = dict(project.env, ORCHESTRATOR_RUN_BASE=str(project.root / "other-run"))
    config = ("-c", str(project.config_dir))
    said = f"Error: a supervisor (pid {first}) runs for this project with the run directory"
    status = orchestrator(project, "status", *config, cwd=project.root, env=other_env)
    assert status.returncode == 1 and status.stderr.startswith(said), describe(status)
    up = orchestrator(project, "up", "-d", *config, cwd=project.root, env=other_env)
    taken = f"a supervisor (pid {first}) already runs with the logs directory {project.root}/logs2"
    assert up.returncode == 1 and taken in up.stderr, describe(up)
    modules = project.config_dir / "modules.yaml"
    modules.write_text(modules.read_text() + "typo: here\n")
    down = orchestrator(project, "down", *config, cwd=project.root, env=other_env)
    assert down.returncode == 1 and down.stderr.startswith(said), describe(down)
    assert [p.pid for p in project.processes() if p.name() == PROCESS_NAME] == [first]
    assert _with_run_base(other_env["ORCHESTRATOR_RUN_BASE"]) == []


def _with_run_base(run_base: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        environ = proc.info["environ"] or {}
        if (
            proc.info["status"] != psutil.STATUS_ZOMBIE
            and environ.get("ORCHESTRATOR_RUN_BASE") == run_base
        ):
            found.append(proc.pid)
    return found


def test_config_given_as_the_project_directory_reaches_the_same_supervisor(
    project: Project,
) -> None:
    # `-c PROJECT` (not PROJECT/config) said "nothing was running" to `down` (exit 0) and "no
    # supervisor" to `status` while the project ran.
    idle_project(project)
    pid = project.up()["supervisor"]["pid"]
    status = orchestrator(
        project, "status", "--json", "-c", project.root.name, cwd=project.root.parent
    )
    assert status.returncode == 0, describe(status)
    assert json.loads(status.stdout)["supervisor"]["pid"] == pid
