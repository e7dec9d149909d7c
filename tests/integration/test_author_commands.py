"""A module author's commands: logs, events, publish, new, and `orchestrator test`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from xml.etree import ElementTree

from helpers import wait_until
from project import Project, describe

from orchestrator import exit_codes

ORCHESTRATOR = (sys.executable, "-m", "orchestrator")
PASSING = """
def test_passes():
    assert 1 + 1 == 2


def test_skipped():
    import pytest
    pytest.skip("not today")
"""

FAILING = """
def test_fails():
    assert "expected" == "actual"
"""


def report_rows(stdout: str) -> dict[str, list[str]]:
    """The rows of `orchestrator test`'s report (after pytest's own output), by module."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("MODULE "))
    return {line.split()[0]: line.split()[1:] for line in lines[start + 1 :] if line.strip()}


def _module_with_tests(project: Project, name: str, tests: dict[str, str] | None) -> str:
    """A package module whose get_tests() lists `tests/` (None: no get_tests at all)."""
    root = project.root / "modules" / name
    (root / "tests").mkdir(parents=True)
    listing = "" if tests is None else '\n\ndef get_tests():\n    return ["tests"]\n'
    (root / "__init__.py").write_text(
        "def initialize(event_bus, config):\n    pass\n\n\ndef shutdown():\n    pass\n" + listing
    )
    for filename, source in (tests or {}).items():
        (root / "tests" / filename).write_text(source)
    return f"../modules/{name}"


def test_logs_shows_the_last_lines_and_follows(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    wait_until(lambda: "says hi" in project.log("idle"), 5, "the first line")
    shown = project.cli("logs", "idle", "-n", "1", check=0).stdout
    assert shown.strip().endswith("idle module says hi")
    follower = subprocess.Popen(
        [*ORCHESTRATOR, "logs", "idle", "-f", "-n", "1", "-c", str(project.config_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=project.env,
        preexec_fn=_interruptible,  # noqa: PLW1509  (as from a terminal, whatever ran this test)
    )
    try:
        assert "says hi" in follower.stdout.readline()  # type: ignore[union-attr]  # following now
        project.cli("restart", "idle", check=0)  # prints "bye" then "hi" again
        lines: list[str] = []  # the shim's own lines (why it stops, say) come in between
        while len(lines) < 10 and not (lines and "says hi" in lines[-1]):
            lines.append(follower.stdout.readline())  # type: ignore[union-attr]
        said = [line for line in lines if "idle module says" in line]
        assert len(said) == 2 and "bye" in said[0] and "hi" in said[1], lines
    finally:
        follower.send_signal(signal.SIGINT)
        follower.communicate(timeout=10)
    assert follower.returncode == 0
    assert "no module named 'nope'" in project.cli("logs", "nope", check=exit_codes.USAGE).stderr


def test_logs_works_while_the_config_on_disk_is_invalid(project: Project) -> None:
    """`logs` loaded the config in full: a module moved away or a typo saved in modules.yaml
    while the supervisor ran made even `logs app` exit 3, just when the logs were wanted."""
    logging = {"level": "INFO", "directory": "journal"}
    project.configure([{"name": "idle", "path": project.probe("idle")}], logging=logging)
    project.up()
    journal = project.root / "journal"
    wait_until(lambda: "says hi" in (journal / "idle.log").read_text(), 5, "the first line")
    modules = project.config_dir / "modules.yaml"
    modules.write_text(modules.read_text() + "typo: here\n")
    assert project.cli("status", "idle").returncode == 0  # the running config is fine
    for running in (True, False):  # asked of the supervisor; then read from the files
        app = project.cli("logs", "app", check=0).stdout
        assert "orchestrator.supervisor" in app, app
        idle = project.cli("logs", "idle", check=0).stdout
        assert "idle module says hi" in idle, idle
        unknown = project.cli("logs", "nope", check=exit_codes.USAGE).stderr
        assert "no module named 'nope' (logs: app, idle)" in unknown, unknown
        if running:
            project.cli("down", check=0)
    (journal / "gone.log").write_text("a module the config no longer lists\n")
    gone = project.cli("logs", "gone", check=0).stdout
    assert gone == "a module the config no longer lists\n", gone


def test_logs_reads_where_the_supervisor_writes_until_the_next_up(project: Project) -> None:
    """A reload that changes `logging.directory` says it applies at the next `up`: `status idle`
    named logs/idle.log, `logs idle` read the new directory (no log yet, exit 1)."""
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    wait_until(lambda: "says hi" in project.log("idle"), 5, "the first line")
    main = project.config_dir / "main.yaml"
    main.write_text(main.read_text().replace("directory: logs", "directory: logs2"))
    reload = project.cli("reload", check=0).stdout
    assert "logging changed; it will apply only at the next `up`" in reload, reload
    (row,) = json.loads(project.cli("status", "idle", "--json", check=0).stdout)["modules"]
    assert row["log"] == str(project.root / "logs" / "idle.log")
    idle = project.cli("logs", "idle", "-n", "1", check=0).stdout
    assert idle.strip().endswith("idle module says hi"), idle
    wait_until(lambda: "reload: logging changed" in project.log("app"), 5, "the reload logged")
    app = project.cli("logs", "app", check=0).stdout
    assert "reload: logging changed" in app, app


def test_publish_reaches_a_module_and_events_shows_it(project: Project) -> None:
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["probe.*"]},
            }
        ]
    )
    project.up()
    watcher = subprocess.Popen(
        [
            *ORCHESTRATOR,
            "events",
            "probe.*",
            "--json",
            "--count",
            "1",
            "--timeout",
            "30",
            "-c",
            str(project.config_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=project.env,
    )
    assert "listening for probe.*" in watcher.stderr.readline()  # type: ignore[union-attr]
    result = project.cli("publish", "probe.note", '{"text": "hi", "n": 2}', check=0)
    assert "published probe.note" in result.stdout
    out, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, out
    event = json.loads(out)
    assert event["type"] == "probe.note" and event["source"] == "cli"
    assert event["data"] == {"text": "hi", "n": 2}
    wait_until(project.recorded, 5, "the recorder module got it")
    assert project.recorded()[0]["data"] == {"text": "hi", "n": 2}


def test_publish_rejects_bad_json_and_bad_types(project: Project) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    project.up()
    bad_json = project.cli("publish", "probe.note", "{nope", check=exit_codes.USAGE)
    assert "not valid JSON" in bad_json.stderr
    bad_type = project.cli("publish", "nodot", check=exit_codes.USAGE)
    assert "invalid event type 'nodot'" in bad_type.stderr


def test_orchestrator_test_reports_per_module(project: Project) -> None:
    project.configure(
        [
            {
                "name": "good",
                "path": _module_with_tests(project, "good", {"test_good.py": PASSING}),
            },
            {"name": "bad", "path": _module_with_tests(project, "bad", {"test_bad.py": FAILING})},
            {"name": "quiet", "path": _module_with_tests(project, "quiet", None)},
        ]
    )
    junit = project.root / "junit.xml"
    result = project.cli("test", "--junit-xml", str(junit), check=exit_codes.FAILED)
    rows = report_rows(result.stdout)
    assert rows["good"][:5] == ["2", "1", "0", "1", "0"], describe(result)
    assert rows["bad"][:5] == ["1", "0", "1", "0", "0"], describe(result)
    assert rows["quiet"] == ["no", "tests"]
    assert "assert 'expected' == 'actual'" in result.stdout  # pytest's own failure output
    assert len(list(ElementTree.parse(junit).getroot().iter("testcase"))) == 3
    only_good = project.cli("test", "good", check=0)
    assert "bad" not in only_good.stdout


def test_orchestrator_test_names_a_module_with_a_missing_test_path(project: Project) -> None:
    path = _module_with_tests(project, "broken", {})
    (project.root / "modules" / "broken" / "tests").rmdir()
    project.configure([{"name": "broken", "path": path}])
    result = project.cli("test", check=exit_codes.FAILED)
    assert "broken: get_tests() lists a path that does not exist" in result.stderr
    unknown = project.cli("test", "nope", check=exit_codes.USAGE)
    assert "no enabled module named 'nope'" in unknown.stderr


def test_new_scaffolds_a_module_whose_test_passes(project: Project) -> None:
    project.configure([])
    (project.config_dir / "modules.yaml").write_text(
        "modules:\n  - name: idle\n    path: ../modules/idle.py\n"
    )
    project.probe("idle")
    result = project.cli("new", "mod-hello", "--add", check=0)
    assert "added mod-hello" in result.stdout
    created = project.root / "modules-backend" / "mod-hello"
    assert (created / "__init__.py").exists() and (created / "tests" / "test_mod_hello.py").exists()
    # Its files name the module by its name; only event types use the namespace mod_hello.
    test_source = (created / "tests" / "test_mod_hello.py").read_text()
    assert "`orchestrator test mod-hello`" in test_source
    assert '"mod_hello.ping"' in test_source
    tested = project.cli("test", "mod-hello", check=0)
    assert "mod-hello" in tested.stdout and "1 passed" in tested.stdout
    status = project.up()
    assert {m["name"]: m["state"] for m in status["modules"]} == {
        "idle": "running",
        "mod-hello": "running",
    }
    wait_until(lambda: "mod-hello ready" in project.log("mod-hello"), 5, "its log line")
    again = project.cli("new", "mod-hello", check=exit_codes.FAILED)
    assert "already exists" in again.stderr
    assert "invalid module name" in project.cli("new", "bad name", check=exit_codes.USAGE).stderr


def test_the_demo_modules_tests_pass_under_orchestrator_test(project: Project) -> None:
    project.copy_demo()
    result = project.cli("test", check=0)
    rows = report_rows(result.stdout)
    for name in ("mod-dummy-producer", "mod-dummy-consumer"):
        tests, passed, failed = (int(n) for n in rows[name][:3])
        assert tests > 0 and passed == tests and failed == 0, describe(result)


SLOW_TEST = """
import os
import time


def test_slow():
    with open(os.environ["PID_FILE"], "w") as out:
        out.write(str(os.getpid()))
    try:
        time.sleep(600)
    finally:  # a test's teardown (a RunningModule stopping its supervisor) must get to run
        with open(os.environ["PID_FILE"] + ".torn-down", "w") as out:
            out.write("yes")
"""


def test_a_terminated_test_run_takes_pytest_and_its_scratch_directory_with_it(
    project: Project,
) -> None:
    """`timeout 8 orchestrator test` (SIGTERM) left pytest running, its parent gone, and its
    report in a /tmp directory nobody removed (a CLI sweep); pytest is interrupted as by Ctrl+C,
    so that its tests' teardown runs (a review: killed, it left their supervisors running).
    Started with SIGINT ignored, as a script's `cmd &` starts it: pytest inherited that, slept
    through the interruption and was killed 30 s later, its teardown never run."""
    path = _module_with_tests(project, "slow", {"test_slow.py": SLOW_TEST})
    project.configure([{"name": "slow", "path": path}])
    scratch, pid_file = project.root / "tmp", project.root / "pytest.pid"
    scratch.mkdir()
    env = {**project.env, "TMPDIR": str(scratch), "PID_FILE": str(pid_file)}
    run = subprocess.Popen(
        [*ORCHESTRATOR, "test", "slow", "-c", str(project.config_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
    )
    try:
        pytest_pid = int(
            wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "pytest")
        )
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 128 + signal.SIGTERM
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    wait_until(lambda: not _alive(pytest_pid), 10, "pytest ended with the command")
    assert list(scratch.iterdir()) == []
    assert (project.root / "pytest.pid.torn-down").exists(), "pytest was killed, not stopped"


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
