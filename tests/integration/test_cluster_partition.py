"""A host really cut off from the NATS cluster and healed: beta runs in a network namespace of
its own, joined to the nats-servers (in ours, with alpha) by a veth pair whose link goes down.

One cut and one heal, driven by the `run` fixture, which polls each phase with a deadline and keeps
what it saw; the tests then say what holds. The cut is found by the bridge's NATS pings (every 2 s,
stale after 2 unanswered: 4-6 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cluster_hosts import bridge, crosses, publish, received, wait_connected, wait_received
from helpers import wait_until
from nats_server import NatsServer
from netns import NetNamespace, network_namespace
from project import Project, projects

pytestmark = pytest.mark.timeout(120)  # the module's one cut and heal run in its first test

DETECTION = 15.0  # s: the bridge's pings give up 4-6 s after the last answer
PART = "x.part"  # alpha -> beta: one topic, one sequence of alpha's supervisor to count gaps in
BACK = "x.back"  # beta -> alpha
FRESH = "y.fresh"  # a type alpha first publishes while beta is cut off


@pytest.fixture(scope="module")
def space() -> Iterator[NetNamespace]:
    with network_namespace() as made:
        yield made


@pytest.fixture(scope="module")
def nodes(
    space: NetNamespace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[NatsServer]]:
    """Three routed nats-server nodes, listening on our end of the veth pair (alpha reaches
    them there too); the routes between them stay on loopback, never cut."""
    logs = tmp_path_factory.mktemp("nats")
    started: list[NatsServer] = []
    cluster = ["--cluster_name", "orch-partition", "--cluster", "nats://127.0.0.1:-1"]
    try:
        host = space.outside_address
        started.append(NatsServer(logs / "n0.log", *cluster, host=host))
        seed = ["--routes", started[0].route_url()]
        started += [NatsServer(logs / f"n{i}.log", *cluster, *seed, host=host) for i in (1, 2)]
        wait_until(lambda: all(n.routes() >= 2 for n in started), 10, "a full mesh of routes")
        yield started
    finally:
        for node in started:
            node.stop()


def configure(project: Project, host: str, servers: list[str]) -> None:
    """A `recorder` of x.* and a `late` recorder of y.* (so each counts its own gaps)."""
    recorder = project.probe("recorder")
    modules = [
        {"name": name, "path": recorder, "config": {"record": str(path), "patterns": [pattern]}}
        for name, path, pattern in (
            ("recorder", project.record_file, "x.*"),
            ("late", late_file(project), "y.*"),
        )
    ]
    project.configure(modules, cluster={"host": host, "servers": servers})


def late_file(project: Project) -> Path:
    return project.root / "late.jsonl"


def late_received(project: Project, event_id: str) -> bool:
    path = late_file(project)
    return path.exists() and f'"id": "{event_id}"' in path.read_text()


def rows(project: Project) -> dict[str, dict[str, Any]]:
    """Every row of `status --json` (the bridge and the modules) by name, from one call."""
    status = project.status()
    return {row["name"]: row for row in [*status["system"], *status["modules"]]}


def cross(source: Project, sink: Project, event_type: str, sent: list[str]) -> None:
    """Publish `event_type` on `source` until one reaches `sink`, then one more that must: once
    it has, every earlier one has arrived or never will (one publisher, one connection)."""

    def crossed() -> bool:
        sent.append(publish(source, event_type, {}))
        return any(seen(sink, event_id) for event_id in sent)

    seen = late_received if event_type == FRESH else lambda p, i: bool(received(p, i))
    wait_until(crossed, 10, f"{event_type} from {source.root} to {sink.root}")
    sent.append(publish(source, event_type, {}))
    wait_until(lambda: seen(sink, sent[-1]), 10, f"the last {event_type} across")


@dataclass
class Run:
    """What the cut and heal left: the hosts (still up), the ids published and the rows seen."""

    alpha: Project
    beta: Project
    part: list[str] = field(default_factory=list)  # every PART alpha published, in order
    back: list[str] = field(default_factory=list)  # every BACK beta published, in order
    fresh: list[str] = field(default_factory=list)  # every FRESH alpha published, in order
    cut_off: dict[str, str] = field(default_factory=dict)  # ids published while cut off
    before: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # host: rows
    during: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # host: rows


@pytest.fixture(scope="module")
def run(space: NetNamespace, nodes: list[NatsServer]) -> Iterator[Run]:
    urls = [node.url for node in nodes]
    alpha_projects, beta_projects = projects(), projects()
    alpha, beta = next(alpha_projects), next(beta_projects)
    beta.command_prefix = space.enter  # `up -d` there: the daemon and its children stay in it
    try:
        configure(alpha, "alpha", urls)
        configure(beta, "beta", urls)
        alpha.up()
        beta.up()
        wait_connected(alpha)
        wait_connected(beta)
        inside = os.stat(f"/run/netns/{space.name}").st_ino
        for proc in beta.processes():
            assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == inside, proc
        result = Run(alpha, beta)
        cross(alpha, beta, PART, result.part)  # the sequences each recorder counts gaps in
        cross(beta, alpha, BACK, result.back)
        result.before = {"alpha": rows(alpha), "beta": rows(beta)}

        space.cut()
        # Alpha's first: the server's retransmission of it to beta's old connection then comes
        # before beta's own after the heal, and the old socket (closed by then) answers with a
        # reset, so beta's event from before detection is lost for sure, not maybe delivered late.
        result.cut_off["part before detection"] = publish(alpha, PART, {})
        result.cut_off["back before detection"] = publish(beta, BACK, {})
        wait_until(
            lambda: bridge(beta)["nats"].startswith("disconnected: "),
            DETECTION,
            "beta's bridge to see it is cut off",
            lambda: beta.log("app"),
        )
        result.cut_off["part"] = publish(alpha, PART, {})
        result.cut_off["fresh"] = publish(alpha, FRESH, {})
        result.cut_off["back"] = publish(beta, BACK, {})
        # Beta talks to itself meanwhile: its own events reach its own recorder.
        for name in ("back before detection", "back"):
            wait_received(beta, result.cut_off[name])
        result.part += [result.cut_off["part before detection"], result.cut_off["part"]]
        result.back += [result.cut_off["back before detection"], result.cut_off["back"]]
        result.fresh.append(result.cut_off["fresh"])
        for here, there in ((alpha, "beta"), (beta, "alpha")):  # 3.5 s without announcements
            wait_until(
                lambda p=here, o=there: bridge(p)["peers"]["unreachable"] == [o],  # type: ignore[misc]
                10,
                f"{there} unreachable",
            )
        result.during = {"alpha": rows(alpha), "beta": rows(beta)}

        space.heal()
        wait_connected(beta)
        cross(alpha, beta, PART, result.part)
        cross(beta, alpha, BACK, result.back)
        cross(alpha, beta, FRESH, result.fresh)
        yield result
    finally:
        for generator in (alpha_projects, beta_projects):
            generator.close()


def lost(sink: Project, sent: list[str]) -> list[str]:
    return [event_id for event_id in sent if not received(sink, event_id)]


def wait_dropped(project: Project, module: str, before: int, expected: int) -> None:
    wait_until(
        lambda: project.module(module)["dropped"] - before == expected,
        5,
        f"{module} on {project.root} to count {expected} dropped",
        lambda: f"{project.module(module)}\narrived: {[e['id'] for e in project.recorded()]}",
    )


def test_a_cut_off_host_runs_on_and_its_bridge_says_disconnected(run: Run) -> None:
    for host in ("alpha", "beta"):
        for name in ("bridge", "recorder", "late"):
            before, during = run.before[host][name], run.during[host][name]
            assert during["state"] == "running", (host, during)
            assert during["restarts"] == 0 and during["pid"] == before["pid"], (host, during)
    assert run.during["beta"]["bridge"]["nats"].startswith("disconnected: ")
    assert run.during["alpha"]["bridge"]["nats"].startswith("connected to ")


def test_each_side_shows_the_other_unreachable_then_up_again(run: Run) -> None:
    """Announcements stop both ways at the cut: 3.5 s later each host shows the other
    unreachable (well before beta's bridge finds the connection dead), and up after the heal."""
    assert run.during["alpha"]["bridge"]["peers"]["unreachable"] == ["beta"]
    assert run.during["beta"]["bridge"]["peers"]["unreachable"] == ["alpha"]
    wait_until(lambda: bridge(run.alpha)["peers"]["up"] == ["beta"], 10, "beta up again")
    wait_until(lambda: bridge(run.beta)["peers"]["up"] == ["alpha"], 10, "alpha up again")


def test_events_to_a_cut_off_host_are_counted_as_dropped_there_after_the_heal(run: Run) -> None:
    """Alpha's bridge handed them to NATS (nothing unsent); beta's recorder counts the gap in
    alpha's sequence once the next one arrives."""
    missing = lost(run.beta, run.part)
    cut_off = [run.cut_off["part before detection"], run.cut_off["part"]]
    assert set(cut_off) <= set(missing), (cut_off, missing)
    assert run.during["alpha"]["bridge"]["unsent"] == run.before["alpha"]["bridge"]["unsent"]
    wait_dropped(run.beta, "recorder", run.before["beta"]["recorder"]["dropped"], len(missing))


def test_events_from_a_cut_off_host_are_counted_or_arrive_late(run: Run) -> None:
    """Before the bridge knows, its events go into the dead connection: counted as exported
    there, never unsent, and as dropped by their subscribers once later ones arrive. Once it
    knows, nats-py holds them (up to 2 MB) and sends them on reconnecting."""
    missing = lost(run.alpha, run.back)
    # The one from before detection is lost (counted as dropped, below) or, where the old
    # connection outlived the heal (a loaded machine: one CI run in many), delivered late:
    # either way never silently gone. Those sent once it knew always arrive.
    assert run.cut_off["back"] not in missing
    assert bridge(run.beta)["unsent"] == run.before["beta"]["bridge"]["unsent"]
    wait_dropped(run.alpha, "recorder", run.before["alpha"]["recorder"]["dropped"], len(missing))


def test_a_healed_host_rejoins_by_itself(run: Run) -> None:
    """The same bridge process reconnects (the fixture saw events cross after the heal)."""
    for project, host in ((run.alpha, "alpha"), (run.beta, "beta")):
        now = rows(project)
        for name in ("bridge", "recorder", "late"):
            assert now[name]["restarts"] == 0, now[name]
            assert now[name]["pid"] == run.before[host][name]["pid"], now[name]
        assert now["bridge"]["nats"].startswith("connected to "), now["bridge"]
    wait_until(crosses(run.alpha, run.beta), 10, "an event from alpha to beta")
    wait_until(crosses(run.beta, run.alpha), 10, "an event from beta to alpha")


def test_the_first_events_of_a_type_lost_while_cut_off_are_counted(run: Run) -> None:
    """Alpha began y.fresh while beta was cut off: the first one beta sees is a baseline, and
    alpha's sync (which says when it sent the first) tells beta the ones before were its own."""
    missing = [event_id for event_id in run.fresh if not late_received(run.beta, event_id)]
    assert run.cut_off["fresh"] in missing
    # A gap is counted as the event after it arrives: once `late` says it has taken in every
    # one that arrived, its count is final.
    arrived = len(run.fresh) - len(missing)
    row = wait_until(
        lambda: (row := run.beta.module("late"))["events_in"] == arrived and row,
        5,
        f"late to have taken in {arrived} events",
    )
    assert row["dropped"] - run.before["beta"]["late"]["dropped"] == len(missing), row
