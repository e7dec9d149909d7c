"""A hostile config: a YAML alias bomb is refused at once, whether given to `up -d`, to `reload` or
saved with hot reload on; the supervisor's loop stays free meanwhile, and the running config stays.
A key written twice is refused, named with its line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from helpers import wait_until
from project import Project, describe

from orchestrator import exit_codes

BOMB_LEVELS = 12  # 9 ** 12 strings once expanded: on a loader that expands it, it never ends


def bomb_modules(project: Project, levels: int = BOMB_LEVELS) -> str:
    """modules.yaml for the `victim` module, its config holding an alias bomb; returns its text."""
    lines = ["      l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    text = (
        "modules:\n"
        "  - name: victim\n"
        f"    path: {project.probe('idle')}\n"
        "    config:\n" + "\n".join(lines) + "\n"
    )
    (project.config_dir / "modules.yaml").write_text(text)
    return text


def expected_error(project: Project) -> str:
    """The one-line error for `bomb_modules`: at the first anchor whose value is too large."""
    # l{k} expands to (9 ** (k + 2) - 1) / 8 nodes: l4 is the first over 50,000, on line 9.
    return (
        f"{project.config_dir}/modules.yaml: line 9, column 11: this value expands to more "
        "than 50000 nodes (aliases counted as copies)"
    )


def start_victim(project: Project, **main: Any) -> int:
    project.configure(
        [{"name": "victim", "path": project.probe("idle"), "config": {"v": 1}}], **main
    )
    return int(project.up()["modules"][0]["pid"])


def back_with_a_new_pid(project: Project, old_pid: int) -> dict[str, Any] | None:
    row = project.module("victim")
    return row if row["state"] == "running" and row["pid"] != old_pid else None


def running_config(project: Project) -> Any:
    details = json.loads(project.cli("status", "victim", "--json", check=0).stdout)
    return details["modules"][0]["config"]


def test_a_bomb_given_to_reload_is_refused_while_the_loop_stays_free(project: Project) -> None:
    pid = start_victim(project)
    bomb_modules(project)
    reload = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "reload", "-c", str(project.config_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=project.env,
    )
    try:
        # Killed as the reload goes in. A loader that expands the bomb keeps the loop busy for
        # minutes (status gets no answer, the module stays down); this one refuses it at once, and
        # the module is back after its usual backoff (0.1 s).
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: back_with_a_new_pid(project, pid),
            10,
            "the killed module back while the bomb is given to reload",
            lambda: project.log("victim"),
        )
        out, err = reload.communicate(timeout=30)
    finally:
        if reload.poll() is None:
            reload.kill()
            reload.wait()
    result = subprocess.CompletedProcess(reload.args, reload.returncode, out, err)
    assert reload.returncode == exit_codes.BAD_CONFIG, describe(result)
    assert err == f"Error: {expected_error(project)}; the running config is unchanged\n"
    assert running_config(project) == {"v": 1}  # the old config keeps running
    app_log = (project.root / "logs" / "app.log").read_text()
    assert f"config reload rejected, keeping the running config: {expected_error(project)}" in (
        app_log
    )


def test_a_bomb_saved_with_hot_reload_on_is_refused(project: Project) -> None:
    pid = start_victim(project, hot_reload=True)
    bomb_modules(project)
    os.kill(pid, signal.SIGKILL)
    app_log = project.root / "logs" / "app.log"
    wait_until(
        lambda: expected_error(project) in app_log.read_text(),
        10,
        "the saved bomb refused",
        app_log.read_text,
    )
    wait_until(lambda: back_with_a_new_pid(project, pid), 10, "the killed module back")
    assert running_config(project) == {"v": 1}


@pytest.mark.parametrize("kind", ["bomb", "duplicate key"])
def test_up_refuses_the_config_with_one_line(project: Project, kind: str) -> None:
    project.configure([])
    if kind == "bomb":
        bomb_modules(project)
        expected = expected_error(project)
    else:
        (project.config_dir / "main.yaml").write_text(
            "logging: {directory: logs}\nsupervision:\n  stop_timeout: 5\n  stop_timeout: 50\n"
        )
        expected = (
            f"{project.config_dir}/main.yaml: line 4, column 3: duplicate key 'stop_timeout' "
            "(first at line 3)"
        )
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert result.stderr == f"Error: {expected}\n", describe(result)
    assert not project.processes()


def test_a_value_the_yaml_constructor_raised_on_is_refused_by_sighup(project: Project) -> None:
    # An integer of 5,000 digits made PyYAML raise ValueError, not a YAML error: SIGHUP (and hot
    # reload) took the supervisor down with every module.
    pid = start_victim(project)
    supervisor = project.status()["supervisor"]["pid"]
    (project.config_dir / "modules.yaml").write_text(
        f"modules:\n  - name: victim\n    path: {project.probe('idle')}\n"
        f"    config: {{v: {'9' * 5000}}}\n"
    )
    os.kill(supervisor, signal.SIGHUP)
    wait_until(
        lambda: project.status()["config"].get("rejected"),
        10,
        "the reload rejected",
        lambda: (project.root / "logs" / "app.log").read_text()[-2000:],
    )
    rejected = project.status()["config"]["rejected"]
    assert rejected.endswith("line 4, column 17: an integer of more than 4300 digits"), rejected
    assert project.module("victim")["pid"] == pid  # untouched
    assert running_config(project) == {"v": 1}


@pytest.mark.parametrize("name", [".env", "modules.yaml"])
def test_a_directory_in_a_config_files_place_is_refused_by_hot_reload(
    project: Project, name: str
) -> None:
    # `docker run -v ./config/.env:...` makes a directory where .env did not exist: the watcher's
    # comparison of the files raised IsADirectoryError on the loop, and the supervisor stopped.
    pid = start_victim(project, hot_reload=True)
    supervisor = project.status()["supervisor"]["pid"]
    path = project.config_dir / name
    path.unlink(missing_ok=True)
    path.mkdir()
    main = project.config_dir / "main.yaml"
    main.write_text(main.read_text() + "# saved\n")  # any config event, while it is a directory
    wait_until(
        lambda: project.status()["config"].get("rejected"),
        10,
        "the reload rejected",
        lambda: (project.root / "logs" / "app.log").read_text()[-2000:],
    )
    status = project.status()
    assert status["supervisor"]["pid"] == supervisor
    rejected = status["config"]["rejected"]
    assert f"{name}: cannot read file: " in rejected and rejected.endswith("a directory"), rejected
    assert project.module("victim")["pid"] == pid  # untouched
    assert running_config(project) == {"v": 1}
