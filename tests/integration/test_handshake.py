"""An event published from initialize() reaches every subscriber that was already running."""

from __future__ import annotations

from helpers import wait_until
from project import Project

from orchestrator.control import ControlClient
from orchestrator.rundir import RunDir

TRIALS = 50


def test_publish_from_initialize_reaches_a_running_subscriber_every_time(project: Project) -> None:
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file), "patterns": ["probe.hello"]},
            },
            {"name": "announcer", "path": project.probe("announcer")},
        ]
    )
    project.up()
    client = ControlClient(RunDir(project.config_dir, project.run_base))
    announced: set[int] = set()
    for trial in range(TRIALS):
        pid = client.request("restart", 30.0, name="announcer")["pid"]
        announced.add(pid)
        # Delivery is asynchronous; the deadline only bounds a failure. A lost event never arrives.
        wait_until(
            lambda pid=pid: any(e["data"]["pid"] == pid for e in project.recorded()),
            5,
            f"trial {trial}: probe.hello from pid {pid} recorded",
            lambda: str(project.recorded()[-3:]),
        )
    # (The very first start raced with the recorder's own start, so only the restarts count.)
    assert len(announced) == TRIALS
    assert announced <= {e["data"]["pid"] for e in project.recorded()}
