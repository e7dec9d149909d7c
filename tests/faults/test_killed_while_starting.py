"""A supervisor SIGKILLed while it starts its modules leaves no process behind, at once, whatever
the moment: before the forks asked for together are answered, between the first and the last of
them, or with half of the modules running."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from helpers import wait_until
from project import Project

MODULES = 20
# The orphan grace (1.5 s) and more. A module process that missed its supervisor's death would
# wait 10 s for a spec before it gave up (it did, when the death came as it set itself up).
GONE_WITHIN = 6.0

MOMENTS: dict[str, Callable[[str], bool]] = {
    "starting": lambda log: f": {MODULES} modules" in log,  # the supervisor's first line
    "first forked": lambda log: "starting (pid" in log,
    "half running": lambda log: log.count(" running (pid") >= MODULES // 2,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_supervisor_killed_while_it_starts_its_modules_leaves_nothing(
    project: Project, moment: str
) -> None:
    project.configure(
        [{"name": f"idle-{i}", "path": project.probe("idle")} for i in range(MODULES)]
    )
    app_log = project.root / "logs" / "app.log"
    supervisor = project.start_foreground()
    reached = MOMENTS[moment]
    wait_until(
        lambda: app_log.exists() and reached(app_log.read_text()),
        30,
        f"the start reached '{moment}'",
        lambda: app_log.read_text() if app_log.exists() else "(no app.log)",
    )
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(10)
    wait_until(lambda: project.processes() == [], GONE_WITHIN, "no process of the project left")
