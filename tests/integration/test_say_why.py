"""Say why, where the user looks: `up -d` and `status` name why a module is not running, `status`
shows a rejected reload until a good config is applied, and a supervisor that died without `down`
is reported by the next `up` and in its modules' logs."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml
from helpers import wait_until
from project import Project, alive, describe

from orchestrator import exit_codes

SYNTAX_ERROR = """
def initialize(event_bus, config):
    values = (

def shutdown():
    pass
"""

RAISES_VALUE_ERROR = """
def initialize(event_bus, config):
    raise ValueError("port must be > 0, got -1")


def shutdown():
    pass
"""


def test_up_names_a_syntax_error_and_its_file_and_who_waits_for_it(project: Project) -> None:
    project.configure(
        [
            {"name": "broken", "path": project.write_module("broken.py", SYNTAX_ERROR)},
            {"name": "after", "path": project.probe("idle"), "depends_on": ["broken"]},
        ]
    )
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    why = result.stderr.split("not running:", 1)[1]
    broken = next(line for line in why.splitlines() if line.strip().startswith("broken ("))
    assert "load failed" in broken and "SyntaxError" in broken, describe(result)
    assert "broken.py, line 3" in broken, describe(result)
    assert "waiting for broken to run (depends_on)" in why, describe(result)
    assert "(starting)" not in result.stdout + result.stderr.split("\n", 1)[0]

    row = project.module("broken")
    assert "SyntaxError" in row["why"] and "broken.py" in row["why"], row
    table = project.cli("status", check=0).stdout
    assert "SyntaxError" in table and "waiting for broken to run (depends_on)" in table, table


def test_up_names_the_exception_initialize_raised(project: Project) -> None:
    project.configure(
        [
            {
                "name": "raiser",
                "path": project.write_module("raiser.py", RAISES_VALUE_ERROR),
                "backoff_initial": 30,  # the first retry is at once, the second waits in backoff
            },
            {"name": "idle", "path": project.probe("idle")},
        ]
    )
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    expected = "initialize() raised ValueError: port must be > 0, got -1"
    assert "raiser (" in result.stderr and expected in result.stderr, describe(result)
    assert "idle" not in result.stderr.split("not running:", 1)[1].split("log:")[0]
    assert project.module("idle")["why"] == ""  # running: nothing to explain
    row = project.wait_module("raiser", state="backoff")
    assert expected in row["why"] and "; retry in " in row["why"], row


def _write_modules(project: Project, modules: list[dict[str, Any]]) -> None:
    (project.config_dir / "modules.yaml").write_text(yaml.safe_dump({"modules": modules}))


def test_a_rejected_reload_shows_in_status_until_a_good_config_is_applied(
    project: Project,
) -> None:
    good = [{"name": "idle", "path": project.probe("idle")}]
    project.configure(good)
    assert project.up()["config"] == {"rejected": None, "since": None}

    _write_modules(project, [{**good[0], "restrat": "always"}])
    result = project.cli("reload")
    assert result.returncode != 0, describe(result)
    rejected = project.status()["config"]
    assert "modules[0].restrat" in rejected["rejected"] and rejected["since"] > 0, rejected
    table = project.cli("status", check=0).stdout
    assert "warning: config change rejected" in table and "modules[0].restrat" in table, table
    assert "orchestrator reload" in table

    _write_modules(project, [{**good[0], "restart": "bogus"}])  # still wrong: still shown
    project.cli("reload", check=result.returncode)
    again = project.status()["config"]
    assert "modules[0].restart" in again["rejected"] and again["since"] == rejected["since"]

    _write_modules(project, good)
    project.cli("reload", check=0)
    assert project.status()["config"] == {"rejected": None, "since": None}
    assert "rejected" not in project.cli("status", check=0).stdout


def test_a_rejected_hot_reload_shows_in_status_until_fixed(project: Project) -> None:
    good = [{"name": "idle", "path": project.probe("idle")}]
    project.configure(good, hot_reload=True)
    project.up()
    _write_modules(project, [{**good[0], "restrat": "always"}])
    wait_until(
        lambda: project.status()["config"]["rejected"],
        10,
        "the broken save shown as rejected",
        lambda: str(project.status()["config"]),
    )
    _write_modules(project, good)
    wait_until(
        lambda: project.status()["config"]["rejected"] is None,
        10,
        "the fixed save clearing the warning",
        lambda: str(project.status()["config"]),
    )


def test_a_supervisor_killed_without_down_is_reported_by_the_next_up(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    status = project.up()
    supervisor = status["supervisor"]["pid"]
    module = status["modules"][0]["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: not alive(module), 5, "the module to exit after the supervisor died")
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")
    said = f"the supervisor (pid {supervisor}) went away without `orchestrator down`"
    assert said in project.log("idle")

    result = project.cli("up", "-d", check=0)
    expected = f"the previous supervisor (pid {supervisor}) stopped without `orchestrator down`"
    assert expected in result.stderr and "app.log" in result.stderr, describe(result)

    project.cli("down", check=0)  # a clean stop leaves nothing to report
    result = project.cli("up", "-d", check=0)
    assert "previous supervisor" not in result.stderr, describe(result)
    assert project.log("idle").count("went away without") == 1

    # A library that aborts the process (libzmq on EMFILE) says why on stderr, and only there.
    run_dir = Path(project.status()["bus"]["xsub"].removeprefix("ipc://")).parent
    abort = "Too many open files (src/ipc_listener.cpp:297)"
    with (run_dir / "supervisor.out").open("a") as output:
        output.write(f"some earlier line\n{abort}\n\n")
    os.kill(project.status()["supervisor"]["pid"], signal.SIGKILL)
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")
    result = project.cli("up", "-d", check=0)
    assert f"its last output: {abort}" in result.stderr, describe(result)


def test_a_broken_config_at_up_keeps_the_dead_supervisors_last_words(project: Project) -> None:
    # The config error of an `up -d` in between replaced them: it truncated supervisor.out and
    # its own error became "the last output" of the supervisor killed before.
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    run_dir = Path(project.status()["bus"]["xsub"].removeprefix("ipc://")).parent
    abort = "Too many open files (src/ipc_listener.cpp:297)"
    with (run_dir / "supervisor.out").open("a") as output:
        output.write(f"{abort}\n")
    os.kill(project.status()["supervisor"]["pid"], signal.SIGKILL)
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")
    good = (project.config_dir / "modules.yaml").read_text()
    (project.config_dir / "modules.yaml").write_text(good.replace("name:", "nmae:", 1))
    result = project.cli("up", "-d", check=3)
    assert "nmae" in result.stderr, describe(result)
    (project.config_dir / "modules.yaml").write_text(good)
    result = project.cli("up", "-d", check=0)
    assert f"its last output: {abort}" in result.stderr, describe(result)
