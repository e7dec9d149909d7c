"""A module process's last heartbeat (its counters as it ends) read after its exit was reaped:
the exit and the message came in one loop turn, the message still on its way. It counts for
its module's status (a job's events), unless another process of the module runs already."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from module_sdk import protocol
from orchestrator.child import LastExit
from orchestrator.child_channel import ChildChannel
from orchestrator.config import BusSection
from orchestrator.manager_reports import ChildReports
from orchestrator.states import ExitReason, ExitStatus

FINAL = {"kind": protocol.HEARTBEAT, "pid": 42, "counters": {"events_out": 1, "events_in": 2}}


def _reports(process: object = None) -> tuple[ChildReports, Any]:
    job = SimpleNamespace(
        name="job",
        process=process,
        counters={},
        last_exit=LastExit(ExitStatus(code=0), ExitReason.EXITED, 0.0, pid=42, channel_id=b"job:1"),
    )
    reports = ChildReports()
    reports.children = cast(Any, {"job": job})
    reports.by_pid = {}  # reaped
    return reports, job


def _channel(reports: ChildReports) -> ChildChannel:
    return ChildChannel(
        cast(Any, None),
        cast(Any, reports),
        bus=BusSection(),
        xsub="",
        xpub="",
        curve=None,
        log_level=lambda: "INFO",
    )


def test_the_last_counters_of_a_reaped_process_count() -> None:
    reports, job = _reports()
    _channel(reports).handle(b"job:1", FINAL)
    assert job.counters["events_out"] == 1 and job.counters["events_in"] == 2


def test_they_do_not_overwrite_a_running_process_or_come_from_another() -> None:
    reports, job = _reports(process=SimpleNamespace(channel_id=b"job:2", pid=43))
    _channel(reports).handle(b"job:1", FINAL)  # restarted already: its new counters stay
    assert job.counters == {}
    reports, job = _reports()
    _channel(reports).handle(b"other:9", FINAL)  # not the process it claims to be
    assert job.counters == {}
