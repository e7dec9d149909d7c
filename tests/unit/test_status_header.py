"""The first line of `orchestrator status`: the supervisor's own CPU and RSS, what it costs
(the output of every module it reads included), when it says them."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import resources
from orchestrator.cli.status import _render
from orchestrator.resources import own_usage


def _header(supervisor: dict[str, Any]) -> str:
    data = {"supervisor": {"pid": 7, "uptime": 3.0, **supervisor}, "limits": {}, "bus": {}}
    return _render(data, module_notes=False).splitlines()[0]


def test_the_header_shows_the_supervisors_own_cpu_and_rss() -> None:
    assert _header({"cpu_percent": 87.4, "rss_mb": 25.06}).startswith(
        "supervisor pid 7, up 3s, CPU 87%, RSS 25.1M; process limit"
    )


def test_an_older_supervisor_without_them_has_the_header_it_had() -> None:
    assert _header({}).startswith("supervisor pid 7, up 3s; process limit")
    assert _header({"cpu_percent": "x", "rss_mb": None}).startswith("supervisor pid 7, up 3s;")


def test_own_cpu_is_over_a_window_of_a_second_or_more(monkeypatch: pytest.MonkeyPatch) -> None:
    # Asked every second by the metrics endpoint and a cluster bridge, and by `status` a few ms
    # later: a tick of CPU over a few ms read as 600-1100%.
    clock = [100.0]
    monkeypatch.setattr(resources.time, "monotonic", lambda: clock[0])
    own = resources._OwnUsage()
    assert own.cpu_percent(10.0) == 0.0  # the window opens
    clock[0] += 0.005
    assert own.cpu_percent(10.01) == 0.0  # a tick in 5 ms: too short a window, kept open
    clock[0] += 1.995
    assert own.cpu_percent(10.5) == pytest.approx(25.0)  # 0.5 s of CPU over 2 s
    clock[0] += 0.01
    assert own.cpu_percent(10.51) == pytest.approx(25.0)  # the last figure, until the next


def test_own_usage_measures_this_process() -> None:
    resources._own.clear()  # a fresh start, whatever ran before in this process
    usage = own_usage()
    assert usage["rss_mb"] > 5 and usage["cpu_percent"] == 0.0  # no window yet
