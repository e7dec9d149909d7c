"""The README's worked example, examples/pipeline, as a user runs it: `up -d`, then `run
producer`; each job is handled by exactly one of the four workers, and the consumer gets every
result."""

from __future__ import annotations

import json
import re
import shutil
from typing import Any

from helpers import wait_until
from project import REPO, Project

BATCH = 10  # examples/pipeline/config/modules.yaml: config: {batch: 10}
RESULT = re.compile(r"job (\d+) = (\d+) \(by (worker#\d)\)")


def _workers(project: Project) -> dict[str, Any]:
    """The counters of group `workers` at the broker (empty until it exists)."""
    stats = project.status()["bus"].get("groups") or {}
    return next((g for g in stats.get("groups", []) if g["group"] == "workers"), {})


def _results(project: Project) -> list[tuple[int, int, str]]:
    log = project.root / "logs" / "consumer.log"
    text = log.read_text() if log.exists() else ""
    return [(int(n), int(square), who) for n, square, who in RESULT.findall(text)]


def test_the_pipeline_example_shares_each_job_with_one_worker(project: Project) -> None:
    shutil.rmtree(project.config_dir)
    shutil.rmtree(project.root / "modules")
    shutil.copytree(REPO / "examples/pipeline/config", project.config_dir)
    shutil.copytree(REPO / "examples/pipeline/modules", project.root / "modules")
    # Its producer runs every minute: a run at the turn of a minute between the two below would
    # be a third batch. Here only `orchestrator run` runs it (once a year is never, for a test).
    modules_file = project.config_dir / "modules.yaml"
    every_minute = 'schedule: "* * * * *"'
    assert every_minute in modules_file.read_text()
    modules_file.write_text(modules_file.read_text().replace(every_minute, 'schedule: "0 0 1 1 *"'))
    status = project.up()
    rows = {row["name"]: row for row in status["modules"]}
    assert [rows[f"worker#{k}"]["state"] for k in range(1, 5)] == ["running"] * 4, rows
    assert rows["consumer"]["state"] == "running" and rows["producer"]["state"] == "stopped"
    # The workers' group is joined (through the broker's groups socket) by all four.
    wait_until(lambda: _workers(project).get("members") == 4, 15, "4 members in group workers")
    ran = project.cli("run", "producer", "--json", check=0)
    assert json.loads(ran.stdout)["result"] == "ok", ran.stdout
    wait_until(lambda: len(_results(project)) >= BATCH, 15, "every result at the consumer")
    results = _results(project)
    assert sorted(n for n, _, _ in results) == list(range(BATCH)), results  # each once
    assert all(square == n * n for n, square, _ in results)
    assert {who for _, _, who in results} <= {f"worker#{k}" for k in range(1, 5)}
    group = _workers(project)
    assert group["pattern"] == "jobs.new" and group["lost"] == 0, group
    # A second run: the pool goes on sharing, still once per job.
    project.cli("run", "producer", check=0)
    wait_until(lambda: len(_results(project)) >= 2 * BATCH, 15, "the second batch's results")
    assert sorted(n for n, _, _ in _results(project)) == sorted(list(range(BATCH)) * 2)
    wait_until(
        lambda: _workers(project)["delivered"] == 2 * BATCH,
        5,
        "the counters updated",
        lambda: f"{_workers(project)}\n{(project.root / 'logs/app.log').read_text()[-3000:]}",
    )
    assert sum(_workers(project)["per_member"]) == 2 * BATCH
    logs = project.cli("logs", "consumer", check=0).stdout  # as the README says to look
    assert "(by worker#" in logs, logs
    # `scale worker 6` grows the pool while it runs: the new instances join the group.
    project.cli("scale", "worker", "6", check=0)
    wait_until(lambda: _workers(project).get("members") == 6, 15, "6 members in group workers")
