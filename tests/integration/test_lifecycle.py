"""The demo and the lifecycle, end to end through the real CLI: up, status, restart, down, Ctrl+C."""

from __future__ import annotations

import signal

from helpers import wait_until
from project import Project, alive, describe

from orchestrator import exit_codes


def test_demo_delivers_ping_and_down_leaves_nothing(project: Project) -> None:
    project.copy_demo()
    project.cli("up", "-d", check=0)
    status = project.status()
    assert [m["state"] for m in status["modules"]] == ["running", "running"], status
    assert status["supervisor"]["pid"] > 0
    assert status["bus"]["xsub"].startswith("ipc://")
    assert status["limits"]["max_processes"] >= 1

    wait_until(
        lambda: "Received test.ping: hello" in project.log("mod-dummy-consumer"),
        10,
        "the consumer logs the producer's ping",
        lambda: project.log("mod-dummy-consumer"),
    )
    assert "supervisor" in (project.root / "logs" / "app.log").read_text()

    result = project.cli("down", check=0)
    assert "stopped" in result.stdout
    assert project.processes() == []
    assert project.socket_files() == []
    assert not any(project.run_base.iterdir())
    assert not project.cgroup_left()


def test_status_table_and_json_agree(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    table = project.cli("status", check=0).stdout
    row = next(line for line in table.splitlines() if line.startswith("idle "))
    pid = project.module("idle")["pid"]
    assert "running" in row and str(pid) in row, table
    assert "process limit" in table.splitlines()[0]


def test_foreground_up_echoes_module_output_and_stops_on_ctrl_c(project: Project) -> None:
    project.copy_demo()
    proc = project.start_foreground()
    project.wait_module("mod-dummy-consumer", state="running")
    project.wait_module("mod-dummy-producer", state="running")
    wait_until(
        lambda: "Received test.ping: hello" in project.log("mod-dummy-consumer"), 10, "a ping"
    )
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert "[mod-dummy-consumer]" in output and "Received test.ping: hello" in output, output
    assert project.processes() == []
    assert project.socket_files() == []


def test_restart_gives_a_new_pid(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    first = project.up()["modules"][0]["pid"]
    result = project.cli("restart", "idle", check=0)
    second = project.module("idle")
    assert second["state"] == "running" and second["pid"] != first, describe(result)
    assert f"pid {second['pid']}" in result.stdout
    assert second["restarts"] == 1
    assert not alive(first)


def test_restart_of_an_unknown_module_is_a_usage_error(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    result = project.cli("restart", "nope", check=exit_codes.USAGE)
    assert "no enabled module named 'nope'" in result.stderr


def test_commands_without_a_supervisor_exit_4(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    for command in (["status"], ["restart", "idle"]):  # `down` has nothing to do: exit 0
        result = project.cli(*command, check=exit_codes.NOT_RUNNING)
        assert "no supervisor is running" in result.stderr


def test_second_up_is_refused_while_one_runs(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    # (its standby comes half a second after `up -d`'s answer: the snapshot waits for it)
    wait_until(lambda: project.module("idle")["standby_pid"] is not None, 10, "the standby")
    running = {p.pid for p in project.processes()}
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert "already running" in result.stderr
    result = project.cli("up", check=exit_codes.FAILED)  # the foreground one starts a template
    assert "already running" in result.stderr
    assert {p.pid for p in project.processes()} == running  # and takes it down with it


def test_module_output_is_captured_in_its_log(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    wait_until(lambda: "idle module says hi" in project.log("idle"), 5, "the module's print")
    project.cli("down", check=0)
    assert "idle module says bye" in project.log("idle")
