"""Dependents stop first (as OTP's rest_for_one and systemd do): an operator's `restart` and a
reload that restarts a dependency stop its dependents, leaves first, while it still runs; then
it stops, starts, and they start after it. Each module's shutdown() checks, after a pause, that
what it depends on is still alive, and writes that to a journal with its pid."""

from __future__ import annotations

import json
from typing import Any

from project import Project, describe

# Each module journals its start and its shutdown; a dependent's shutdown first lingers (so that
# a dependency stopped beside it would be gone) and then records whether its dependency lives.
JOURNALED = """
import json, os, time
from pathlib import Path
from typing import Any

me = os.environ["ORCHESTRATOR_MODULE"]
conf: dict[str, Any] = {}


def _note(**fields: Any) -> None:
    line = json.dumps({"name": me, "pid": os.getpid(), "t": time.monotonic(), **fields})
    with open(conf["journal"], "a") as sink:
        sink.write(line + "\\n")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def initialize(event_bus: object, config: dict[str, Any]) -> None:
    conf.update(config)
    Path(conf["journal"] + "." + me).write_text(str(os.getpid()))
    _note(event="start")


def shutdown() -> None:
    dep = conf.get("dep")
    if dep is None:
        _note(event="shutdown")
        return
    time.sleep(0.4)
    pid = int(Path(conf["journal"] + "." + dep).read_text())
    _note(event="shutdown", dep=dep, dep_pid=pid, dep_alive=_alive(pid))
"""


def _configure(project: Project, version: int = 1) -> None:
    path = project.write_module("journaled.py", JOURNALED)
    journal = str(project.root / "journal")

    def module(name: str, dep: str | None = None, **more: Any) -> dict[str, Any]:
        config: dict[str, Any] = {"journal": journal, **({"dep": dep} if dep else {})}
        if name == "db":
            config["version"] = version
        entry: dict[str, Any] = {"name": name, "path": path, "config": config, **more}
        return entry

    project.configure(
        [
            module("db"),
            module("api", "db", depends_on=["db"]),
            module("web", "api", depends_on=["api"]),
            module("cache", "db", depends_on=[{"name": "db", "on_failure": "stop"}]),
            module("audit", "db", depends_on=[{"name": "db", "on_failure": "ignore"}]),
        ]
    )


def _journal(project: Project) -> list[dict[str, Any]]:
    lines = (project.root / "journal").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _check_order(entries: list[dict[str, Any]], log: str) -> None:
    """The shutdowns and starts of one restart of db, in the journal's order."""
    shutdowns = [e for e in entries if e["event"] == "shutdown"]
    assert [e["name"] for e in shutdowns][:2] in (["web", "cache"], ["cache", "web"]), entries
    assert [e["name"] for e in shutdowns][2:] == ["api", "db"], entries
    for entry in shutdowns[:3]:  # each dependent stopped while what it depends on still ran
        assert entry["dep_alive"] is True, (entry, log)
    by_name = {e["name"]: e for e in shutdowns}
    assert by_name["api"]["t"] > by_name["web"]["t"] and by_name["db"]["t"] > by_name["api"]["t"]
    starts = [e["name"] for e in entries if e["event"] == "start"]
    assert starts == ["db", "api", "web"], entries  # cache stays stopped (on_failure: stop)


def test_a_restart_and_a_reload_stop_dependents_first(project: Project) -> None:
    _configure(project)
    project.up()
    audit = project.module("audit")["pid"]
    (project.root / "journal").write_text("")
    restarted = project.cli("restart", "db", check=0)
    web = project.wait_module("web", state="running", restarts=1)
    log = (project.root / "logs/app.log").read_text()
    entries = _journal(project)
    _check_order(entries, log)
    assert "db stops once its dependents have stopped" in log, log
    assert project.module("cache")["state"] == "stopped"
    assert project.module("audit")["pid"] == audit  # ignore: it never stopped
    assert f"(pid {project.module('db')['pid']})" in restarted.stdout, describe(restarted)

    # A reload that changes db does the same.
    project.cli("start", "cache", check=0)
    (project.root / "journal").write_text("")
    _configure(project, version=2)
    reloaded = project.cli("reload", "--json", check=0)
    assert list(json.loads(reloaded.stdout)["restart"]) == ["db"], describe(reloaded)
    project.wait_module("web", state="running", restarts=2)
    _check_order(_journal(project), (project.root / "logs/app.log").read_text())
    assert project.module("web")["pid"] != web["pid"]

    # `stop db`: what waits on a module that waits itself says so, down the chain.
    project.cli("stop", "db", check=0)
    chain = "waiting for api to run (depends_on; api: waiting for db)"
    project.wait_module("web", state="waiting", why=chain)
    assert f"web: {chain}" in project.cli("status", check=0).stdout
