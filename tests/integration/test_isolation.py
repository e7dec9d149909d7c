"""Per-module limits and isolation with real module processes: rlimits, another user, Landlock,
and the cgroup limits where this machine lets a supervisor enforce them (on v2, or else v1)."""

from __future__ import annotations

import json
import os
import pwd
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from project import Project

from module_sdk import landlock
from module_sdk.limits import RUN_DIR_FD
from orchestrator.cgroup_limits import CONTROLLERS as CGROUP_CONTROLLERS
from orchestrator.cgroups import ModuleCgroups
from orchestrator.config.limits import ModuleLimits

REPORTER = """
import errno
import os
import sys


def initialize(event_bus, config):
    report = {"uid": os.getuid(), "gid": os.getgid(), "umask": os.umask(0)}
    for key, path in config.get("read", {}).items():
        try:
            with open(path) as source:
                source.read()
            report[key] = "read"
        except OSError as exc:
            report[key] = errno.errorcode[exc.errno]
    for key, path in config.get("write", {}).items():
        try:
            with open(path, "w") as sink:
                sink.write("x")
            report[key] = "written"
        except OSError as exc:
            report[key] = errno.errorcode[exc.errno]
    for key, path in config.get("connect", {}).items():
        import socket
        client = socket.socket(socket.AF_UNIX)
        try:
            client.connect(path)
            report[key] = "connected"
        except OSError as exc:
            report[key] = errno.errorcode[exc.errno]
        finally:
            client.close()
    if "files" in config:
        held = []
        try:
            while len(held) < config["files"]:
                held.append(open(os.devnull))
            report["files"] = "no limit"
        except OSError as exc:
            report["files"] = errno.errorcode[exc.errno]
        report["opened"] = len(held)
        for handle in held:
            handle.close()
    if "forks" in config:
        children = []
        try:
            while len(children) < config["forks"]:
                pid = os.fork()
                if pid == 0:
                    os.read(os.open("/proc/self/stat", os.O_RDONLY), 1)
                    import time
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
            report["forks"] = "no limit"
        except OSError as exc:
            report["forks"] = errno.errorcode[exc.errno]
        report["forked"] = len(children)
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    print(f"reporter runs as uid {os.getuid()}", flush=True)
    event_bus.subscribe("iso.ping", lambda event: event_bus.publish("iso.pong", event.data))
    event_bus.publish("iso.report", report)


def shutdown():
    pass
"""

HOG = """
import threading
import time


def grow():
    hoard = []
    while len(hoard) < 256:  # 2 GB at most, 400 MB a second: the supervisor polls every 0.2 s
        hoard.append(bytearray(8 * 1024 * 1024))
        time.sleep(0.02)


def initialize(event_bus, config):
    threading.Thread(target=grow, daemon=True).start()


def shutdown():
    pass
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")


def _controllers() -> frozenset[str]:
    """The controllers a supervisor here could limit its modules with, on cgroup v2 or else v1
    (a probe, removed)."""
    probe = ModuleCgroups(f"probe-{uuid.uuid4().hex[:8]}")
    try:
        probe.prepare("probe", ModuleLimits(memory_max_mb=64, cpu_quota=1.0, pids_max=64))
        return frozenset(CGROUP_CONTROLLERS[key] for key in probe.enforced_by["probe"])
    finally:
        probe.close()


CONTROLLERS = _controllers()


@pytest.fixture
def reporting(project: Project) -> Iterator[Project]:
    """A project whose modules may be read by any user (the module file, its directories)."""
    for path in (project.root, project.root / "modules"):
        path.chmod(0o755)
    yield project


def _run_reporter(project: Project, **entry: Any) -> dict[str, Any]:
    """Run the reporter with `entry` merged into its modules.yaml entry, and the recorder before
    it; return the report it published on the bus."""
    reporter = project.write_module("reporter.py", REPORTER)
    (project.root / "modules" / "reporter.py").chmod(0o644)
    recorder = {
        "name": "recorder",
        "path": project.probe("recorder"),
        "config": {"record": str(project.record_file), "patterns": ["iso.*"]},
    }
    module = {"name": "reporter", "path": reporter, "depends_on": ["recorder"], **entry}
    project.configure([recorder, module])
    project.up()

    def report() -> dict[str, Any] | None:
        found = [e["data"] for e in project.recorded() if e["type"] == "iso.report"]
        return found[0] if found else None

    return wait_until(report, 15, "the reporter's report", lambda: project.log("reporter"))


def test_rlimits_and_umask_hold_and_status_says_which_cgroup_limits_the_kernel_enforces(
    reporting: Project,
) -> None:
    report = _run_reporter(
        reporting,
        rlimits={"nofile": 64, "core": 0},
        umask="027",
        memory_max_mb=512,
        cpu_quota=0.5,
        pids_max=100,
        config={"files": 200},
    )
    assert report["files"] == "EMFILE", report
    assert 0 < report["opened"] < 64
    assert report["umask"] == 0o027
    limits = reporting.module("reporter")["limits"]
    assert limits["rlimits"] == {
        "value": {"nofile": [64, 64], "core": [0, 0]},
        "enforced": True,
        "note": "",
    }
    assert limits["umask"]["value"] == "027"
    for key, controller in (
        ("memory_max_mb", "memory"),
        ("cpu_quota", "cpu"),
        ("pids_max", "pids"),
    ):
        assert limits[key]["enforced"] is (controller in CONTROLLERS), limits
        if controller in CONTROLLERS:
            assert limits[key]["note"] in ("enforced (cgroup v1)", "enforced (cgroup v2)"), limits
        else:
            assert limits[key]["note"].startswith(f"{key} not enforced: "), limits
    assert limits["memory_max_mb"]["value"] == 512
    text = reporting.cli("status", "reporter", check=0).stdout
    assert "limits:" in text and "memory_max_mb 512" in text and "rlimits" in text


@needs_root
def test_a_module_run_as_nobody_cannot_read_root_files_but_runs_and_publishes(
    reporting: Project,
) -> None:
    secret = reporting.root / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    report = _run_reporter(
        reporting,
        user="nobody",
        config={"read": {"secret": str(secret)}},
        start_method="spawn",
        filesystem={"read_only": [str(reporting.root / "modules")]},  # Landlock as well
    )
    assert report["uid"] == pwd.getpwnam("nobody").pw_uid, report
    assert report["secret"] == "EACCES", report
    wait_until(lambda: "reporter runs as uid" in reporting.log("reporter"), 5, "captured output")
    row = reporting.module("reporter")
    assert row["state"] == "running"
    assert row["limits"]["user"] == {"value": "nobody", "enforced": True, "note": ""}
    reporting.cli("restart", "reporter", check=0)  # the grants hold for the next process too


@needs_root
def test_a_forked_module_run_as_nobody_reaches_a_restarted_broker(reporting: Project) -> None:
    secret = reporting.root / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    held = f"/proc/self/fd/{RUN_DIR_FD}"  # the run directory, as the module reaches it
    # (A fork of the template, which has imported `socket`: a user that cannot read the Python
    # installation, as nobody here, imports nothing new.)
    connect = {
        "control": f"{held}/control.sock",
        "bus": f"{held}/xsub.sock",
        "groups": f"{held}/groups.sock",  # grouped subscriptions, as a `work_group:` needs
    }
    report = _run_reporter(
        reporting, user="nobody", config={"read": {"secret": str(secret)}, "connect": connect}
    )
    assert report["uid"] != 0 and report["secret"] == "EACCES", report
    assert report["control"] == "EACCES", report  # no `orchestrator down` from the module
    assert report["bus"] == "connected" and report["groups"] == "connected", report
    broker = reporting.status()["bus"]["broker_pid"]
    os.kill(broker, signal.SIGKILL)

    def restarted() -> bool:
        bus = reporting.status()["bus"]
        return bool(bus["broker_running"]) and bus["broker_pid"] != broker

    wait_until(restarted, 15, "a new broker")
    # The new broker's sockets are new files: the module must still be let in to reconnect.

    def pong() -> bool:
        reporting.cli("publish", "iso.ping", '{"n": 1}', check=0)
        return any(e["type"] == "iso.pong" for e in reporting.recorded())

    wait_until(pong, 20, "a pong through the new broker", lambda: reporting.log("reporter"))


@pytest.mark.skipif(landlock.abi_version() < 1, reason="this kernel has no Landlock")
def test_filesystem_restricts_a_module_to_its_paths(reporting: Project) -> None:
    inside = reporting.root / "data"
    inside.mkdir()
    outside = reporting.root / "elsewhere.txt"
    outside.write_text("readable by mode")
    report = _run_reporter(
        reporting,
        filesystem={"read_write": [str(inside)]},
        config={
            "read": {"outside": str(outside), "own": str(reporting.root / "modules/reporter.py")},
            "write": {"inside": str(inside / "out.txt"), "beside": str(reporting.root / "no")},
        },
    )
    assert report["outside"] == "EACCES", report
    assert report["own"] == "read"
    assert report["inside"] == "written" and (inside / "out.txt").read_text() == "x"
    assert report["beside"] == "EACCES"
    limits = reporting.module("reporter")["limits"]
    assert limits["filesystem"]["enforced"] is True


@pytest.mark.skipif("pids" not in CONTROLLERS, reason="no writable pids controller (v2 nor v1)")
def test_forking_past_pids_max_fails_inside_the_module(reporting: Project) -> None:
    # Threads count too: the module process has a handful of its own (ZeroMQ's, the shim's).
    report = _run_reporter(reporting, pids_max=24, config={"forks": 50})
    assert report["forks"] == "EAGAIN", report
    assert report["forked"] < 24


def test_a_module_past_memory_max_is_stopped_by_the_kernel_or_else_by_polling(
    project: Project,
) -> None:
    hog = project.write_module("hog.py", HOG)
    project.configure([{"name": "hog", "path": hog, "memory_max_mb": 64, "restart": "never"}])
    project.cli("up", "-d")
    last = wait_until(lambda: project.module("hog")["last_exit"], 30, "the hog's exit")
    expected = "memory limit (kernel)" if "memory" in CONTROLLERS else "memory limit"
    assert last["reason"] == expected, last


def test_a_limit_too_tight_for_the_module_process_to_set_up_says_why(project: Project) -> None:
    # Its shim could not open its sockets: only "load failed (exit 70)" said so, the reason in
    # a traceback in its log alone.
    project.configure(
        [
            {
                "name": "tiny",
                "path": project.probe("idle"),
                "restart": "never",
                "rlimits": {"nofile": 8},
            }
        ]
    )
    result = project.cli("up", "-d", check=1)
    # Its shim fails (exit 70) or libzmq aborts (SIGABRT), depending on where the limit hits.
    assert "Too many open files" in result.stderr, result.stderr
    last = project.module("tiny")["last_exit"]
    assert "Too many open files" in last["error"], last


SILENT_SECOND_TIME = """
import os

if not os.path.exists(os.environ["MARK"]):
    open(os.environ["MARK"], "w").close()
    print("STALE: all good, serving requests", flush=True)
os._exit(1)
"""


def test_a_silent_failed_start_is_not_given_an_earlier_process_words(project: Project) -> None:
    mark = project.root / "mark"
    path = project.write_module("silent.py", SILENT_SECOND_TIME)
    project.configure([{"name": "silent", "path": path, "env": {"MARK": str(mark)}}])
    project.cli("up", "-d", check=1)
    # From the history, not by catching the first exit: on a loaded machine it had restarted to
    # its limit (failed: no more exits) before the first look.
    history = wait_until(
        lambda: len(h := _history(project, "silent")) >= 2 and h,
        30,  # a backoff and a start: a loaded CI machine took over 15 s
        "a second exit",
    )
    first, *later = sorted(history, key=lambda exit: exit["time"])
    assert "STALE" in first["error"], first  # the first process did say it
    for exit in later:
        assert "STALE" not in exit["error"], exit


def _history(project: Project, name: str) -> list[dict[str, Any]]:
    """Module `name`'s restart history, from `status NAME --json`."""
    details = json.loads(project.cli("status", name, "--json").stdout)
    return list(details["modules"][0]["history"])


USES_EMAIL = """
import email.utils
import smtplib


def initialize(event_bus, config):
    print("formatted", email.utils.formataddr(("a", "a@example.org")), flush=True)


def shutdown():
    pass
"""


def test_modules_named_like_python_modules_neither_replace_them_nor_break(project: Project) -> None:
    # Imported under its name, a module named `zmq` took pyzmq's place in its process and went
    # deaf at its first event (status: running); one named `email` broke smtplib.
    project.configure(
        [
            {
                "name": "zmq",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["named.*"]},
            },
            {"name": "email", "path": project.write_module("mailer.py", USES_EMAIL)},
        ]
    )
    project.up()
    for _ in range(3):
        project.cli("publish", "named.ping", check=0)
    wait_until(lambda: len(project.recorded()) >= 3, 10, "every event recorded by `zmq`")
    assert project.module("zmq")["state"] == "running"
    wait_until(lambda: "formatted a <a@example.org>" in project.log("email"), 10, "email's line")
