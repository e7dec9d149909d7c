"""Grouped subscriptions under a real supervisor: `group:` in modules.yaml makes two modules share
the work, and `status` shows the broker's counters for the group."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import free_ports, wait_until
from project import Project

WORKER = """
import os

_path = ""


def _done(event):
    fd = os.open(_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{event.data['n']}\\n".encode())
    finally:
        os.close(fd)


def initialize(event_bus, config):
    global _path
    _path = config["record"]
    event_bus.subscribe("work.*", _done)  # grouped by the module's `group:` setting


def shutdown():
    pass
"""

PRODUCER = """
def initialize(event_bus, config):
    for n in range(config["count"]):
        event_bus.publish("work.item", {"n": n})


def shutdown():
    pass
"""


def _done(project: Project, name: str) -> list[int]:
    path = project.root / f"{name}.done"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_modules_of_one_group_share_the_events(project: Project, transport: str) -> None:
    """On tcp, the groups socket is a CURVE server as the bus's are: members have the key."""
    worker = project.write_module("worker.py", WORKER)
    producer = project.write_module("producer.py", PRODUCER)
    modules: list[dict[str, Any]] = [
        {
            "name": name,
            "path": worker,
            "work_group": "workers",
            "redeliver": True,
            "config": {"record": str(project.root / f"{name}.done")},
        }
        for name in ("w1", "w2")
    ]
    modules.append(
        {"name": "producer", "path": producer, "config": {"count": 100}, "depends_on": ["w1", "w2"]}
    )
    bus: dict[str, Any] = {}
    if transport == "tcp":
        xsub, xpub, groups = free_ports(3)
        bus = {"transport": "tcp", "xsub_port": xsub, "xpub_port": xpub, "groups_port": groups}
    project.configure(modules, bus=bus)
    status = project.up()
    assert status["bus"]["groups_endpoint"].startswith(f"{transport}://"), status["bus"]
    wait_until(lambda: len(_done(project, "w1") + _done(project, "w2")) >= 100, 20.0, "all done")
    first, second = _done(project, "w1"), _done(project, "w2")
    assert sorted(first + second) == list(range(100))  # each to one worker, none lost
    assert first and second, (len(first), len(second))

    def reported() -> dict[str, Any] | None:
        groups = project.status()["bus"].get("groups") or {}
        rows = [g for g in groups.get("groups", []) if g["group"] == "workers"]
        return rows[0] if rows and rows[0]["acked"] == 100 else None

    row = wait_until(reported, 10.0, "the broker's counters in status")
    assert row["members"] == 2 and row["pattern"] == "work.*" and row["lost"] == 0, row
    shown = project.cli("status", check=0).stdout
    assert "group workers (work.*): 2 member(s), 100 delivered, 0 lost" in shown, shown
