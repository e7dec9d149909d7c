"""module_sdk.limits in a real child process: what it applies before module code runs, and how
it refuses to run with less than it was asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from module_sdk import protocol
from module_sdk.limits import ENV_LIMITS, EXIT_LIMITS_FAILED, RUN_DIR_FD, via_run_dir_fd

SHOW = """
import json, os, resource
from module_sdk.limits import apply_from_env
apply_from_env()
print(json.dumps({
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "core": resource.getrlimit(resource.RLIMIT_CORE),
    "umask": os.umask(0),
    "uid": os.getuid(),
    "env": os.environ.get("ORCHESTRATOR_LIMITS"),
    "channel": os.environ.get("ORCHESTRATOR_CHANNEL"),
}))
"""


def run(limits: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW],
        env={**os.environ, ENV_LIMITS: limits, protocol.ENV_MODULE: "probe", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_rlimits_and_umask_are_applied_and_the_variable_consumed() -> None:
    result = run(json.dumps({"rlimits": [["nofile", 32, 64], ["core", 0, -1]], "umask": 0o77}))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["nofile"] == [32, 64]
    assert shown["core"][0] == 0
    assert shown["umask"] == 0o77
    assert shown["env"] is None  # what the module's own subprocesses do not need to see


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ("{not json", "cannot apply its limits: Expecting property name"),
        ('{"rlimits": [["nofiles", 1, 1]]}', "unknown rlimit 'nofiles'"),
        ('{"rlimits": [["nofile", 10, 5]]}', "rlimits.nofile [10, 5]"),
        ('{"rlimits": [["nofile"]]}', "cannot apply its limits"),
        ('{"umask": "x"}', "cannot apply its limits"),
    ],
)
def test_limits_that_cannot_be_applied_stop_the_module(limits: str, said: str) -> None:
    result = run(limits)
    assert result.returncode == EXIT_LIMITS_FAILED, result
    assert result.stdout == ""
    assert said in result.stderr and result.stderr.startswith("probe: "), result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_user_switch_holds_the_run_directory_and_points_the_channel_there(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    limits = {"uid": 65534, "gid": 65534, "groups": [65534], "run_dir": str(tmp_path)}
    result = run(json.dumps(limits), ORCHESTRATOR_CHANNEL=f"ipc://{tmp_path}/child.sock")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["uid"] == 65534
    assert shown["channel"] == f"ipc:///proc/self/fd/{RUN_DIR_FD}/child.sock"


def test_bus_endpoints_are_rewritten_only_for_ipc() -> None:
    assert via_run_dir_fd("ipc:///run/x/xsub.sock") == f"ipc:///proc/self/fd/{RUN_DIR_FD}/xsub.sock"
    assert via_run_dir_fd("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
