"""`up -d` forks the CLI into the supervisor: what a supervisor started as an interpreter of its
own had (a session of its own, /dev/null for stdin, its output in the run directory, nothing of
the working directory on its import path, nothing left behind) must hold for the fork too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
from helpers import wait_until
from project import Project, describe

from orchestrator.daemon import PROCESS_NAME
from orchestrator.rundir import RunDir

# A package of the same name as one only the supervisor imports, in the directory `up -d` runs
# from: the fork must not import it (what `python -P` ensured for the old daemon).
SHADOW = 'raise ImportError("the working directory\'s broker package was imported")\n'


def test_the_forked_supervisor_is_detached_and_shadowed_by_nothing(project: Project) -> None:
    (project.root / "broker").mkdir()
    (project.root / "broker" / "__init__.py").write_text(SHADOW)
    idle = project.probe("idle")
    project.configure(
        [
            {"name": "forked", "path": idle},
            {"name": "spawned", "path": idle, "start_method": "spawn"},
        ]
    )
    result = project.cli("up", "-d")  # from project.root, where the shadow is
    assert result.returncode == 0, describe(result)
    status = project.status()
    assert {m["name"]: m["state"] for m in status["modules"]} == {
        "forked": "running",
        "spawned": "running",
    }
    pid = status["supervisor"]["pid"]
    supervisor = psutil.Process(pid)
    assert supervisor.name() == PROCESS_NAME
    assert os.getsid(pid) == pid  # a session leader: no terminal's signals reach it
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    output = str(RunDir(project.config_dir, project.run_base).daemon_output)
    assert os.readlink(f"/proc/{pid}/fd/1") == output
    assert os.readlink(f"/proc/{pid}/fd/2") == output
    inherited = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert sum(path == output for path in inherited) == 2  # the CLI's own handles were closed

    project.cli("down", check=0)
    wait_until(lambda: not project.processes(), 10.0, "every process of the project gone")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


SLOW_START = """
import time


def initialize(event_bus, config):
    print("slow module initializing", flush=True)
    time.sleep(60)


def shutdown():
    pass
"""


def test_up_d_interrupted_while_it_waits_says_the_supervisor_starts_on(project: Project) -> None:
    slow = project.write_module("slow.py", SLOW_START)
    project.configure([{"name": "slow", "path": slow, "start_timeout": 120}])
    command = [sys.executable, "-m", "orchestrator", "up", "-d", "-c", str(project.config_dir)]
    waiting = subprocess.Popen(
        command, env=project.env, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        log = project.root / "logs" / "slow.log"
        wait_until(
            lambda: log.exists() and "slow module initializing" in log.read_text(),
            20.0,
            "the module started, up -d waiting for it",
        )
        waiting.send_signal(signal.SIGTERM)  # `timeout`, or a CI runner giving up
        _, stderr = waiting.communicate(timeout=10)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    said = stderr.decode()
    assert waiting.returncode == 128 + signal.SIGTERM, said
    pid = project.status()["supervisor"]["pid"]
    assert f"interrupted; the supervisor (pid {pid}) keeps starting in the background" in said
    assert "Traceback" not in said
