"""Live changes: `reload` applies only the difference; hot reload restarts only what was saved."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import wait_until
from project import FAST_SUPERVISION, Project, alive

from orchestrator import exit_codes

GOOD = """
def initialize(event_bus, config):
    print("version", config.get("version", 1), flush=True)


def shutdown():
    pass
"""


def _pids(project: Project) -> dict[str, Any]:
    return {m["name"]: m["pid"] for m in project.status()["modules"]}


def _modules(project: Project, names: list[str], **overrides: dict[str, Any]) -> None:
    entries = [{"name": n, "path": project.probe("idle"), **overrides.get(n, {})} for n in names]
    (project.config_dir / "modules.yaml").write_text(yaml.safe_dump({"modules": entries}))


def test_reload_applies_only_the_difference(project: Project) -> None:
    project.configure([])
    _modules(project, ["a", "b", "c"])
    project.up()
    before = _pids(project)
    _modules(project, ["a", "c", "d"], a={"config": {"x": 1}})

    dry = project.cli("reload", "--dry-run", check=0).stdout
    assert "start:     d" in dry and "stop:      b" in dry and "restart:   a (config" in dry
    assert "unchanged: c" in dry and "dry run" in dry
    assert _pids(project) == before

    project.cli("reload", check=0)
    project.wait_module("d", state="running")
    row_a = project.wait_module("a", state="running")
    assert row_a["pid"] != before["a"]
    wait_until(lambda: set(_pids(project)) == {"a", "c", "d"}, 10, "b removed")
    assert _pids(project)["c"] == before["c"]


def test_an_invalid_config_changes_nothing(project: Project) -> None:
    project.configure([])
    _modules(project, ["a"])
    project.up()
    before = _pids(project)
    (project.config_dir / "modules.yaml").write_text("modules:\n  - name: a\n    paht: x\n")
    result = project.cli("reload", check=exit_codes.BAD_CONFIG)
    assert "modules[0].paht: unknown key" in result.stderr
    assert "running config is unchanged" in result.stderr
    assert _pids(project) == before
    assert "config reload rejected" in (project.root / "logs/app.log").read_text()


def test_a_reload_that_finds_modules_yaml_emptied_changes_nothing(project: Project) -> None:
    # A save that truncates, then writes: a reload (systemd's ExecReload, a tool's) that reads
    # it in between found "no modules" and stopped every one.
    project.configure([])
    _modules(project, ["a", "b"])
    project.up()
    before = _pids(project)
    for halfway in ("\n", "# The modules the supervisor runs.\n", "modules:\n"):
        (project.config_dir / "modules.yaml").write_text(halfway)
        result = project.cli("reload", check=exit_codes.BAD_CONFIG)
        assert "modules.yaml: it lists no modules (caught while" in result.stderr, result.stderr
        assert "write `modules: []` to run none" in result.stderr
        assert _pids(project) == before
    (project.config_dir / "modules.yaml").write_text("modules: []\n")  # said on purpose
    project.cli("reload", check=0)
    wait_until(lambda: _pids(project) == {}, 10, "every module stopped")


def test_a_reload_that_finds_main_yaml_emptied_changes_nothing(project: Project) -> None:
    # The same save, of main.yaml: every setting went back to its default (webhooks gone,
    # modules restarted under default supervision) until the next reload.
    project.configure([])
    _modules(project, ["a"])
    project.up()
    before = _pids(project)
    for halfway in ("", "# settings of the supervisor\n"):
        (project.config_dir / "main.yaml").write_text(halfway)
        result = project.cli("reload", check=exit_codes.BAD_CONFIG)
        assert "main.yaml: it holds nothing (caught while being saved?)" in result.stderr
        assert _pids(project) == before
    (project.config_dir / "main.yaml").write_text("{}\n")  # all defaults, on purpose
    project.cli("reload", check=0)


def test_sighup_reloads(project: Project) -> None:
    project.configure([])
    _modules(project, ["a"])
    status = project.up()
    _modules(project, ["a", "e"])
    os.kill(status["supervisor"]["pid"], signal.SIGHUP)
    project.wait_module("e", state="running")


def test_hot_reload_restarts_a_saved_module_once_and_survives_a_broken_save(
    project: Project,
) -> None:
    path = project.write_module("live.py", GOOD)
    later = {"name": "later", "path": project.write_module("later.py", GOOD)}
    later.update(schedule="0 0 1 1 *", restart="never")  # not due in this test
    project.configure(
        [{"name": "live", "path": path}, {"name": "idle", "path": project.probe("idle")}, later],
        hot_reload=True,
        supervision=FAST_SUPERVISION,
    )
    status = project.up()
    # A saved scheduled module that is not running is not started by the hot reload.
    (project.root / "modules" / "later.py").write_text(GOOD + "\n# saved\n")
    app_log = project.root / "logs" / "app.log"
    wait_until(lambda: "later changed; scheduled" in app_log.read_text(), 10, "later's save seen")
    assert (project.module("later")["state"], project.module("later")["pid"]) == ("stopped", None)
    idle_pid = next(m["pid"] for m in status["modules"] if m["name"] == "idle")
    source = project.root / "modules" / "live.py"
    for version in range(2, 7):  # an editor's burst of writes
        source.write_text(GOOD.replace('config.get("version", 1)', str(version)))
    project.wait_module("live", state="running", restarts=1)
    wait_until(lambda: "version 6" in project.log("live"), 5, "the last save running")

    source.write_text(GOOD + "\nthis is not python(\n")
    broken = wait_until(
        lambda: (row := project.module("live"))["last_exit"]["reason"] == "load failed" and row,
        10,
        "the broken save reported",
    )
    assert "SyntaxError" in broken["last_exit"]["error"]
    assert project.module("idle")["pid"] == idle_pid  # the rest keeps running

    source.write_text(GOOD.replace('config.get("version", 1)', "7"))
    project.wait_module("live", state="running")
    wait_until(lambda: "version 7" in project.log("live"), 5, "the fixed save running")
    assert project.module("idle")["pid"] == idle_pid


def test_code_and_config_saved_together_restart_the_module_once(project: Project) -> None:
    path = project.write_module("live.py", GOOD)
    entry = {"name": "live", "path": path, "config": {"version": 1}}
    project.configure([entry], hot_reload=True, supervision=FAST_SUPERVISION)
    project.up()
    source = project.root / "modules" / "live.py"
    source.write_text(GOOD.replace('print("version"', 'print("code 2, version"'))
    entry["config"] = {"version": 5}  # a restart of `live` for the config too
    (project.config_dir / "modules.yaml").write_text(yaml.safe_dump({"modules": [entry]}))
    wait_until(lambda: "code 2, version 5" in project.log("live"), 10, "the new code and config")
    project.wait_module("live", state="running")
    # Both changes are decided in one loop turn, logged before the new process could say ready.
    app_log = (project.root / "logs" / "app.log").read_text()
    assert "reload: start -; stop -; restart live (config)" in app_log, app_log
    assert "hot reload: live changed" not in app_log, app_log
    assert project.log("live").count("code 2") == 1


PACKAGE = """
from .ver import VERSION


def initialize(event_bus, config):
    print("package version", VERSION, flush=True)


def shutdown():
    pass
"""


def test_a_package_swapped_in_by_a_deploy_restarts_and_is_followed(project: Project) -> None:
    """`cp -r pkg pkg.new; edit; mv pkg pkg.old; mv pkg.new pkg`: the new code runs, and the
    new directory's edits are the ones followed (the watch of the old one went with it)."""
    modules = project.root / "modules"
    (modules / "pkg").mkdir()
    (modules / "pkg" / "__init__.py").write_text(PACKAGE)
    (modules / "pkg" / "ver.py").write_text("VERSION = 1\n")
    entry = {"name": "pkg", "path": "../modules/pkg"}
    project.configure([entry], hot_reload=True, supervision=FAST_SUPERVISION)
    project.up()
    shutil.copytree(modules / "pkg", modules / "pkg.new")
    (modules / "pkg.new" / "ver.py").write_text("VERSION = 2\n")
    (modules / "pkg").rename(modules / "pkg.old")
    (modules / "pkg.new").rename(modules / "pkg")
    wait_until(lambda: "package version 2" in project.log("pkg"), 10, "the new package running")
    (modules / "pkg" / "ver.py").write_text("VERSION = 3\n")
    wait_until(lambda: "package version 3" in project.log("pkg"), 10, "its edit running")
    project.wait_module("pkg", state="running")


def test_a_config_edit_is_applied_while_watching(project: Project) -> None:
    project.configure([], hot_reload=True)
    main = (project.config_dir / "main.yaml").read_text()
    _modules(project, ["a"])
    project.up()
    _modules(project, ["a", "f"])
    project.wait_module("f", state="running")
    assert (project.config_dir / "main.yaml").read_text() == main


def _publish(config_dir: Path, version: str, files: dict[str, str]) -> None:
    """What the kubelet does to a mounted ConfigMap: the files go to a new directory, then a new
    `..data` link to it is renamed over the old one, then the old directory is removed. The
    config files themselves are links through `..data`."""
    (config_dir / version).mkdir()
    for name, text in files.items():
        (config_dir / version / name).write_text(text)
        if not (config_dir / name).is_symlink():
            (config_dir / name).unlink(missing_ok=True)
            (config_dir / name).symlink_to(f"..data/{name}")
    old = (config_dir / "..data").resolve() if (config_dir / "..data").is_symlink() else None
    (config_dir / "..data_tmp").symlink_to(version)
    os.replace(config_dir / "..data_tmp", config_dir / "..data")  # `mv -T`: atomic
    if old is not None:
        shutil.rmtree(old)


def _live_config(version: int) -> str:
    entry = {"name": "live", "path": "../modules/live.py", "config": {"version": version}}
    return yaml.safe_dump({"modules": [entry]})


def _applied(project: Project, version: int) -> None:
    """Wait until `live` runs with the config of `version`."""
    app_log = project.root / "logs" / "app.log"
    wait_until(
        lambda: f"version {version}" in project.log("live"),
        10,
        f"version {version} applied",
        app_log.read_text,
    )


def test_a_config_saved_again_after_its_cause_was_fixed_elsewhere_is_applied(
    project: Project,
) -> None:
    """A reload refused for a reason outside the config files (a module file not yet written):
    saving the same config again, once the file is there, must try again (a review: the same
    content was taken for no change, and nothing happened, silently)."""
    project.write_module("live.py", GOOD)
    entries = [{"name": "live", "path": "../modules/live.py"}]
    project.configure(entries, hot_reload=True)
    project.up()
    text = yaml.safe_dump({"modules": [*entries, {"name": "late", "path": "../modules/late.py"}]})
    (project.config_dir / "modules.yaml").write_text(text)
    wait_until(lambda: project.status()["config"].get("rejected"), 10, "the reload rejected")
    project.write_module("late.py", GOOD)
    (project.config_dir / "modules.yaml").write_text(text)  # saved again, unchanged
    project.wait_module("late", state="running")
    assert not project.status()["config"].get("rejected")


def test_a_configmap_update_is_applied_while_watching(project: Project) -> None:
    # The update was never applied: only `..data` changes, and that is no config file's name.
    project.write_module("live.py", GOOD)
    project.configure([], hot_reload=True)
    main = (project.config_dir / "main.yaml").read_text()
    _publish(project.config_dir, "..2024_a", {"main.yaml": main, "modules.yaml": _live_config(1)})
    project.up()
    _applied(project, 1)
    for version, folder in ((2, "..2024_b"), (3, "..2024_c")):
        files = {"main.yaml": main, "modules.yaml": _live_config(version)}
        _publish(project.config_dir, folder, files)
        _applied(project, version)
    project.wait_module("live", state="running", restarts=2)


def test_a_linked_config_file_edited_in_place_is_applied(project: Project) -> None:
    # `config/modules.yaml -> ../shared/modules.yaml`: a save of the file it names was never seen.
    project.write_module("live.py", GOOD)
    project.configure([], hot_reload=True)
    config, shared, other = project.config_dir, project.root / "shared", project.root / "shared2"
    shared.mkdir()
    other.mkdir()
    (shared / "modules.yaml").write_text(_live_config(1))
    (config / "modules.yaml").unlink()
    (config / "modules.yaml").symlink_to("../shared/modules.yaml")
    project.up()
    _applied(project, 1)
    (shared / "modules.yaml").write_text(_live_config(2))  # in place
    _applied(project, 2)
    # The link now names another file (renamed over it: `ln -sfn` is not atomic)...
    (other / "modules.yaml").write_text(_live_config(3))
    (config / "modules.yaml.new").symlink_to("../shared2/modules.yaml")
    os.replace(config / "modules.yaml.new", config / "modules.yaml")
    _applied(project, 3)
    (other / "modules.yaml").write_text(_live_config(4))  # ...whose saves are followed from now
    _applied(project, 4)
    project.wait_module("live", state="running", restarts=3)


SLOW_STOP = """
import time


def initialize(event_bus, config):
    pass


def shutdown():
    time.sleep(4)
"""


def test_a_module_added_back_while_its_removal_is_stopping_survives(project: Project) -> None:
    slow = project.write_module("slow.py", SLOW_STOP)
    project.configure([{"name": "s", "path": slow}])
    first = project.up()["modules"][0]["pid"]
    (project.config_dir / "modules.yaml").write_text("modules: []\n")
    project.cli("reload", check=0)
    project.configure([{"name": "s", "path": slow}])
    project.cli("reload", check=0)
    wait_until(lambda: not alive(first), 10, "the first process to finish stopping")
    row = project.wait_module("s", state="running")
    assert row["pid"] != first and alive(row["pid"])
    assert "s" in project.cli("reload", "--dry-run", check=0).stdout  # still known: unchanged


def test_new_modules_may_depend_on_each_other_in_any_order(project: Project) -> None:
    project.configure([])
    _modules(project, ["a"])
    project.up()
    _modules(project, ["a", "b", "c"], b={"depends_on": ["c"]}, a={"depends_on": ["c"]})
    project.cli("reload", check=0)
    for name in ("a", "b", "c"):
        project.wait_module(name, state="running")


def test_a_command_on_a_module_a_reload_is_removing_answers_at_once(project: Project) -> None:
    """`restart` or `start` of a module a reload is taking out used to wait out its --wait
    (the restart never came), then blame the supervisor for not answering."""
    slow = {"name": "slow", "path": project.write_module("slow.py", SLOW_STOP)}
    project.configure([slow, {"name": "idle", "path": project.probe("idle")}])
    project.up()
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.cli("reload", check=0)
    for command in ("restart", "start"):
        result = project.cli(command, "slow", "--wait", "30", check=1)
        assert "slow is being removed: a reload took it out" in result.stderr
    assert project.module("slow")["state"] in ("stopping", "running")  # still on its way out
    wait_until(lambda: "slow" not in _pids(project), 15, "slow gone")


def test_a_terminal_hangup_stops_a_foreground_up(project: Project) -> None:
    # Closing the terminal of a foreground `up` sent SIGHUP, taken for "reload": everything ran
    # on, writing to a terminal that was gone, and the next `up` said "already running".
    if shutil.which("setsid") is None:
        pytest.skip("no setsid (util-linux) here to give `up` a terminal of its own")
    project.configure([])
    _modules(project, ["a"])
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(  # its own session, with the pty as its terminal (setsid --ctty)
        ["setsid", "--ctty", sys.executable, "-m", "orchestrator", "up"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=dict(project.env, ORCHESTRATOR_CONFIG=str(project.config_dir)),
        cwd=project.root,
    )
    os.close(terminal)
    try:
        project.wait_module("a", state="running")
        os.close(controller)  # the terminal window closes
        controller = -1
        assert proc.wait(30) == 0
        wait_until(lambda: project.processes() == [], 10, "nothing of the project left")
        log = (project.root / "logs" / "app.log").read_text()
        assert "received SIGHUP (the terminal hung up): stopping all modules" in log
    finally:
        if controller != -1:
            os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sighup_while_stopping_reloads_nothing(project: Project) -> None:
    project.configure(
        [{"name": "slow", "path": project.write_module("slow.py", SLOW_STOP), "stop_timeout": 10}]
    )
    supervisor = project.up()["supervisor"]["pid"]
    app_log = project.root / "logs" / "app.log"
    os.kill(supervisor, signal.SIGTERM)
    wait_until(lambda: "stopping all modules" in app_log.read_text(), 10, "the stop begun")
    os.kill(supervisor, signal.SIGHUP)
    wait_until(lambda: project.processes() == [], 20, "everything stopped")
    text = app_log.read_text()
    assert "received SIGHUP while stopping: no reload" in text
    assert "reloading the config" not in text
