"""The first line of `orchestrator status`: the supervisor's own CPU and RSS, what it costs
(the output of every module it reads included), when it says them."""

from __future__ import annotations

from typing import Any

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


def test_own_usage_measures_this_process() -> None:
    own_usage()
    sum(range(2_000_000))  # some CPU between two looks
    usage = own_usage()
    assert usage["rss_mb"] > 5 and usage["cpu_percent"] >= 0
