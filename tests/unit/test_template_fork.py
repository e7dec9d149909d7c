"""The fork server's template as a fork of the supervisor (module_sdk/template_fork.py): made
when the supervisor has one thread, it keeps nothing of the supervisor's that a template started
as `python -m module_sdk.forkserver` would not have; with more threads, it is that one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A supervisor in miniature: a package the template must not keep (yaml), a descriptor and a
# signal handler of its own, maybe a second thread; then the template, and a process it forks
# (as it forks the broker) that reports what it inherited.
SUPERVISOR = r"""
import json, os, signal, sys, threading, time
from pathlib import Path
import click, yaml  # pure Python, and with a compiled extension (libyaml's)
signal.signal(signal.SIGUSR1, lambda *_: None)
extra = os.open(os.devnull, os.O_RDONLY)
sys.stdout.reconfigure(errors="backslashreplace")  # as the CLI does for a terminal
sys.setprofile(lambda *_: None)  # a profiler (coverage's tracer, say)
if sys.argv[1] == "threaded":
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
if sys.argv[1] == "unset":  # as the supervisor takes systemd's NOTIFY_SOCKET out
    del os.environ["NOTIFY_SOCKET"]
from orchestrator.forkserver import ForkServer
lifeline, keep = os.pipe()
server = ForkServer(lifeline)
server.start()
pid, output = server.receive(server.send_main("probe_main", [], dict(os.environ), Path.cwd()))
report = json.loads(output.read())
with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
    report["template_cmdline"] = cmdline.read().decode().split("\0")
with open(f"/proc/{server.pid}/comm") as comm:
    report["template_comm"] = comm.read().strip()
report["template_fds"] = sorted(int(fd) for fd in os.listdir(f"/proc/{server.pid}/fd"))
report["extra"], report["lifeline"], report["keep"] = extra, lifeline, keep
server.close()
print(json.dumps(report))
"""

PROBE = r"""
import json, os, signal, sys
print(json.dumps({
    "click": "click" in sys.modules,
    "cyaml": __import__("yaml").load("a: 1", Loader=__import__("yaml").CSafeLoader),
    "orchestrator": any(n.split(".")[0] == "orchestrator" for n in sys.modules),
    "sdk": "module_sdk.shim" in sys.modules,
    "usr1_default": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
    "stdout_errors": sys.stdout.errors,
    "profiled": sys.getprofile() is not None,
}))
"""


def _run(tmp_path: Path, mode: str, *options: str) -> dict[str, object]:
    (tmp_path / "probe_main.py").write_text(PROBE)
    done = subprocess.run(
        [sys.executable, *options, "-c", SUPERVISOR, mode],
        env=dict(os.environ, PYTHONPATH=str(tmp_path), NOTIFY_SOCKET="/x"),  # (the probe's)
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_a_template_forked_from_the_supervisor_keeps_nothing_of_it(tmp_path: Path) -> None:
    report = _run(tmp_path, "single")
    cmdline = report["template_cmdline"]
    assert isinstance(cmdline, list) and "module_sdk.forkserver" not in cmdline  # a fork
    assert report["template_comm"] == "forkserver"
    fds = report["template_fds"]
    assert isinstance(fds, list)
    assert report["extra"] not in fds and report["keep"] not in fds  # the lifeline's write end
    assert report["lifeline"] in fds
    assert report["click"] is False and report["orchestrator"] is False  # imported afresh
    # Kept, as an extension cannot be loaded twice: imported again, yaml's classes no longer
    # matched its libyaml binding's, and CSafeLoader failed on every document.
    assert report["cyaml"] == {"a": 1}
    assert report["sdk"] is True  # what it is there for
    assert report["usr1_default"] is True and report["profiled"] is False
    # stdout's error handler is a new interpreter's (the CLI's backslashreplace is not)
    assert report["stdout_errors"] == _run(tmp_path, "threaded")["stdout_errors"]


@pytest.mark.parametrize(
    ("mode", "options"), [("threaded", ()), ("unset", ()), ("single", ("-O", "-W", "error"))]
)
def test_a_template_that_would_inherit_too_much_is_an_interpreter(
    tmp_path: Path, mode: str, options: tuple[str, ...]
) -> None:
    # Threads: a fork may inherit a lock held forever. A variable taken out of the environment:
    # a fork shows it in /proc/PID/environ, and so does every module forked from it. Options of
    # the interpreter (-O, -W): every module would run with them.
    report = _run(tmp_path, mode, *options)
    cmdline = report["template_cmdline"]
    assert isinstance(cmdline, list) and "module_sdk.forkserver" in cmdline
    assert report["template_comm"] == "forkserver"
    assert report["click"] is False and report["usr1_default"] is True
