"""What goes wrong, and that the rest keeps running: crashes, a dead supervisor, bad input."""

from __future__ import annotations

import os
import random
import signal

import pytest
import zmq
from helpers import wait_until
from project import Project, alive

from module_sdk import protocol
from orchestrator import exit_codes


def _recorder(project: Project, patterns: list[str]) -> dict[str, object]:
    return {
        "name": "recorder",
        "path": project.probe("recorder"),
        "config": {"record": str(project.record_file), "patterns": patterns},
    }


def test_kill_9_of_a_module_restarts_it_and_publishes_module_error(project: Project) -> None:
    project.configure(
        [_recorder(project, ["module.*"]), {"name": "idle", "path": project.probe("idle")}]
    )
    project.up()
    victim = project.module("idle")["pid"]
    os.kill(victim, signal.SIGKILL)
    row = project.wait_module("idle", state="running", restarts=1)
    assert row["pid"] != victim
    assert row["last_exit"]["signal"] == signal.SIGKILL
    assert row["last_exit"]["reason"] == "crash"

    def error_event() -> dict[str, object] | None:
        return next((e for e in project.recorded() if e["type"] == "module.error"), None)

    event = wait_until(error_event, 5, "a module.error event", lambda: str(project.recorded()))
    assert event["source"] == "orchestrator"
    assert event["data"]["name"] == "idle"  # type: ignore[index]
    assert event["data"]["signal"] == signal.SIGKILL  # type: ignore[index]


def test_kill_9_of_the_supervisor_leaves_no_process_and_up_works_again(project: Project) -> None:
    project.copy_demo()
    status = project.up()
    supervisor = status["supervisor"]["pid"]
    modules = [m["pid"] for m in status["modules"]]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(
        lambda: not any(alive(pid) for pid in modules),
        5,
        "every module process to exit after the supervisor died",
        lambda: str([pid for pid in modules if alive(pid)]),
    )
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")
    status = project.up()
    assert [m["state"] for m in status["modules"]] == ["running", "running"]
    project.cli("down", check=0)


def test_a_module_that_raises_in_initialize_is_reported_and_others_keep_running(
    project: Project,
) -> None:
    project.configure(
        [
            {"name": "bad", "path": project.probe("raises"), "max_restarts": 1},
            {"name": "idle", "path": project.probe("idle")},
        ]
    )
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    assert "bad" in result.stderr and "idle" not in result.stderr.split("not running:")[1]
    project.wait_module("idle", state="running")
    bad = project.wait_module("bad", state="failed")
    assert "initialize() raised RuntimeError: boom" in bad["last_exit"]["error"]
    assert bad["last_exit"]["reason"] == "initialize failed"
    log = project.log("bad")
    assert "Traceback" in log and "boom: the probe failed on purpose" in log
    table = project.cli("status", check=0).stdout
    assert "initialize() raised RuntimeError: boom" in table


def test_a_module_without_shutdown_fails_to_load(project: Project) -> None:
    project.configure([{"name": "half", "path": project.probe("no_shutdown"), "restart": "never"}])
    project.cli("up", "-d", check=exit_codes.FAILED)
    row = project.wait_module("half", state="stopped")
    assert row["last_exit"]["reason"] == "load failed"
    assert "does not define shutdown()" in row["last_exit"]["error"]


def test_random_frames_on_the_bus_do_not_crash_a_module(project: Project) -> None:
    project.configure([_recorder(project, ["*"])])
    status = project.up()
    pid = status["modules"][0]["pid"]
    context = zmq.Context()
    raw = context.socket(zmq.PUB)
    raw.connect(status["bus"]["xsub"])
    rng = random.Random(1)
    try:
        # The recorder subscribes to everything, so every frame reaches it; resend until it has
        # seen some (a new PUB socket drops what it sends before the subscriptions reach it).
        def garbage_counted() -> bool:
            for _ in range(20):
                raw.send(rng.randbytes(rng.randint(1, 64)))
                raw.send_multipart([b"test.ping", rng.randbytes(rng.randint(1, 64))])
            return project.module("recorder")["bad_frames"] > 0

        wait_until(garbage_counted, 10, "bad frames counted in status")
        raw.send_multipart([b"\xff\xfe", b"\x00"])
    finally:
        raw.close(linger=0)
        context.term()
    row = project.module("recorder")
    assert row["state"] == "running" and row["pid"] == pid
    project.cli("restart", "recorder", check=0)  # it still answers and stops cleanly


def test_bad_yaml_is_a_config_error_naming_file_and_line(project: Project) -> None:
    project.configure([])
    (project.config_dir / "main.yaml").write_text("logging:\n  level: INFO\n bad: [\n")
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert "main.yaml: line" in result.stderr and "invalid YAML" in result.stderr
    assert project.processes() == []


def test_missing_module_file_is_a_config_error(project: Project) -> None:
    project.configure([{"name": "ghost", "path": "../modules/ghost.py"}])
    result = project.cli("up", check=exit_codes.BAD_CONFIG)
    assert "modules.yaml: modules[0].path" in result.stderr and "ghost.py" in result.stderr
    assert project.processes() == []  # nor the fork server's template, started before the config


def test_undefined_variable_is_a_config_error_naming_it(project: Project) -> None:
    project.configure(
        [
            {
                "name": "idle",
                "path": project.probe("idle"),
                "config": {"token": "${NOT_SET_ANYWHERE}"},
            }
        ]
    )
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert "modules[0].config.token" in result.stderr
    assert "NOT_SET_ANYWHERE" in result.stderr


def test_a_config_without_modules_yaml_is_a_config_error_naming_it(project: Project) -> None:
    """main.yaml is optional (every key has a default); modules.yaml says what to run: without
    it, a directory is no config directory (`-c` given the wrong one, say)."""
    (project.config_dir / "main.yaml").unlink(missing_ok=True)
    (project.config_dir / "modules.yaml").unlink(missing_ok=True)
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert "(it holds no modules.yaml, the list of modules to run)" in result.stderr, result.stderr
    assert "main.yaml" not in result.stderr, result.stderr
    assert project.processes() == []


CHATTY_FOREVER = """
import sys
import threading


def initialize(event_bus, config):
    def flood():
        line = "x" * 99 + "\\n"
        while True:
            sys.stdout.write(line)

    threading.Thread(target=flood, daemon=True).start()


def shutdown():
    pass
"""

SPAWNS_THEN_STALLS = """
import subprocess
import time


def initialize(event_bus, config):
    child = subprocess.Popen(["sleep", "300"])
    with open(config["pid_file"], "w") as sink:
        sink.write(str(child.pid))
    time.sleep(300)


def shutdown():
    pass
"""

REPORTS_SIGNAL_MASK = """
def initialize(event_bus, config):
    with open("/proc/self/status") as status:
        print(next(line for line in status if line.startswith("SigBlk")).strip(), flush=True)


def shutdown():
    pass
"""


def test_a_module_that_floods_its_output_does_not_stall_the_supervisor(project: Project) -> None:
    path = project.write_module("flood.py", CHATTY_FOREVER)
    project.configure(
        [{"name": "flood", "path": path}, {"name": "idle", "path": project.probe("idle")}],
        logging={"level": "INFO", "directory": "logs", "max_file_size_mb": 1, "backup_count": 1},
    )
    project.up()
    project.cli("restart", "idle", timeout=30, check=0)  # the loop still answers and spawns
    assert project.module("idle")["restarts"] == 1
    assert project.module("flood")["state"] == "running"
    project.cli("down", "--timeout", "2", timeout=30, check=0)
    assert project.processes() == []


def test_supervisor_killed_while_a_module_is_in_initialize_leaves_no_orphan(
    project: Project,
) -> None:
    pid_file = project.root / "sleep.pid"
    path = project.write_module("stalls.py", SPAWNS_THEN_STALLS)
    project.configure([{"name": "stalls", "path": path, "config": {"pid_file": str(pid_file)}}])
    daemon = project.start_foreground()
    project.wait_module("stalls", state="starting")
    sleeper = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "sleep"))
    daemon.kill()
    daemon.wait(10)
    wait_until(lambda: not alive(sleeper), 5, "the module's subprocess to go with it")
    wait_until(lambda: project.processes() == [], 5, "no process of the project left")


def test_modules_start_with_no_signal_blocked(project: Project) -> None:
    project.configure(
        [{"name": "mask", "path": project.write_module("mask.py", REPORTS_SIGNAL_MASK)}]
    )
    project.up()
    line = wait_until(lambda: "SigBlk" in project.log("mask") and project.log("mask"), 5, "mask")
    blocked = line.split("SigBlk:")[1].split()[0]
    assert int(blocked, 16) == 0, line


def test_an_unwritable_log_directory_is_one_line_and_leaves_no_stale_run(
    project: Project,
) -> None:
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    (project.root / "logs").write_text("a file where the log directory goes\n")
    result = project.cli("up", "-d", check=exit_codes.BAD_CONFIG)
    assert "main.yaml: logging.directory: cannot write logs in" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (project.root / "logs").unlink()
    again = project.cli("up", "-d", check=0)
    assert "stopped without" not in again.stderr, again.stderr  # that start never ran


INTERRUPTED_IMPORT = """
import threading
import time

threading.Thread(target=time.sleep, args=(3600,), name="left running").start()  # not a daemon
raise KeyboardInterrupt  # as a Ctrl+C in the middle of its import would


def initialize(event_bus, config):
    pass


def shutdown():
    pass
"""


def test_a_spawned_module_that_escapes_the_shim_fails_at_once_despite_its_threads(
    project: Project,
) -> None:
    """A KeyboardInterrupt out of the shim (here from the module's import) left a spawned
    module's interpreter waiting for its non-daemon thread: the supervisor saw nothing until the
    start timeout killed it, and said that instead. It fails at once, as a forked one does."""
    path = project.write_module("interrupted.py", INTERRUPTED_IMPORT)
    project.configure(
        [
            {
                "name": "interrupted",
                "path": path,
                "start_method": "spawn",
                "restart": "never",
                "start_timeout": 600,  # the hang, had it come back, ends the wait below first
            }
        ]
    )
    project.start_foreground()
    row = project.wait_module("interrupted", 30, state="stopped")
    assert row["last_exit"]["reason"] == "load failed", row
    assert "KeyboardInterrupt" in project.log("interrupted")


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_sys_exit_at_a_modules_import_exits_with_its_code(
    project: Project, start_method: str
) -> None:
    """`sys.exit(0)` (or 5) at import is the module's own end, with its code, as Python's:
    not a load failure (ending in `os._exit` even when main() raises must keep that)."""
    modules = []
    for code in (0, 5):
        path = project.write_module(f"quits{code}.py", f"import sys\nsys.exit({code})\n")
        modules.append(
            {"name": f"quits{code}", "path": path, "start_method": start_method, "restart": "never"}
        )
    project.configure(modules)
    project.start_foreground()
    for code in (0, 5):
        row = project.wait_module(f"quits{code}", 30, state="stopped" if code else "done")
        assert row["last_exit"]["code"] == code, row
        assert row["last_exit"]["reason"] != "load failed", row


RAISES_BASE_EXCEPTIONS = """
import threading
import time


class Weird(BaseException):
    pass


def exit_3(message):
    return SystemExit(3)


RAISED = {"KeyboardInterrupt": KeyboardInterrupt, "GeneratorExit": GeneratorExit, "Weird": Weird}
RAISED["SystemExit"] = exit_3
asked = {}


def initialize(event_bus, config):
    asked.update(config)
    if config.get("job"):  # done at once, its event published: then shutdown() raises
        event_bus.publish("job.done", {"n": 1})
        raise SystemExit(0)
    threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: no hold on it
    raise RAISED[config["raise"]]("in initialize")


def shutdown():
    raise RAISED[asked["raise"]]("in shutdown")
"""


@pytest.mark.parametrize(
    ("raised", "start_method"),
    [("KeyboardInterrupt", "spawn"), ("GeneratorExit", "fork"), ("Weird", "fork")],
)
def test_a_base_exception_from_initialize_is_a_failed_initialize(
    project: Project, raised: str, start_method: str
) -> None:
    """Not only an Exception: what initialize() raises is its failure, said as such, however
    the module runs (it was a failed load, exit 70, with no reason given)."""
    path = project.write_module("base.py", RAISES_BASE_EXCEPTIONS)
    module = {"name": "base", "path": path, "start_method": start_method, "restart": "never"}
    project.configure([{**module, "config": {"raise": raised}}])
    project.cli("up", "-d", check=exit_codes.FAILED)
    row = project.wait_module("base", state="stopped")
    assert row["last_exit"]["reason"] == "initialize failed", row
    assert row["last_exit"]["error"] == f"initialize() raised {raised}: in initialize", row


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        ("KeyboardInterrupt", protocol.EXIT_SHUTDOWN_FAILED),
        ("Weird", protocol.EXIT_SHUTDOWN_FAILED),
        ("SystemExit", 3),
    ],
)
def test_a_base_exception_from_shutdown_still_lets_the_module_finish_cleanly(
    project: Project, raised: str, code: int
) -> None:
    """A job (done in initialize()) whose shutdown() raises a BaseException exits 74 (or with
    the code sys.exit() asked for), with its bus closed and its last counters sent: it exited 70
    with neither."""
    path = project.write_module("base.py", RAISES_BASE_EXCEPTIONS)
    module = {"name": "job", "path": path, "restart": "never"}
    project.configure([{**module, "config": {"raise": raised, "job": True}}])
    project.start_foreground()
    row = project.wait_module("job", 30, state="stopped")
    assert row["last_exit"]["code"] == code, row
    assert row["events_out"] == 1, row
    if code == protocol.EXIT_SHUTDOWN_FAILED:
        assert f"{raised}: in shutdown" in project.log("job")
