"""`@retry`, `@circuit_breaker` and `concurrency:` in real module processes under a real
supervisor: the counts in `status --json` and /metrics, the log lines, callbacks overlapping on
a pool, order per event type, and the thread limit holding a greedy module back.

One project serves the whole file (its modules are independent; each test sends its own trigger).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
from helpers import wait_until
from project import Project, projects

from orchestrator.resources import grant_threads

FLAKY = """
from typing import Any
from module_sdk import CircuitOpenError, Event, EventBus, circuit_breaker, retry

_bus: Any = None
calls = {"go": 0, "defaults": 0}


@retry(max_attempts=3, exceptions=(ConnectionError,), wait_min=0, wait_max=0)
def fetch() -> int:
    calls["go"] += 1
    if calls["go"] <= 2:
        raise ConnectionError(f"refused {calls['go']}")
    return calls["go"]


@retry  # main.yaml's error_handling: 4 attempts, no waits
async def fetch_with_defaults() -> int:
    calls["defaults"] += 1
    if calls["defaults"] <= 3:
        raise TimeoutError("slow")
    return calls["defaults"]


@circuit_breaker(fail_max=2, reset_timeout=600, exceptions=(ConnectionError,))
def down() -> None:
    raise ConnectionError("the database is down")


def on_go(event: Event) -> None:
    _bus.publish("flaky.done", {"attempts": fetch()})


def on_defaults(event: Event) -> None:
    import asyncio

    _bus.publish("flaky.defaults_done", {"attempts": asyncio.run(fetch_with_defaults())})


def on_breaker(event: Event) -> None:
    for n in range(4):
        try:
            down()
        except (ConnectionError, CircuitOpenError) as exc:
            _bus.publish("flaky.refused", {"n": n, "error": type(exc).__name__})


def on_fan(event: Event) -> None:
    for name in ("a", "b", "c", "d"):
        _bus.publish(f"{event.type.split('.')[1]}.{name}")


def on_feed(event: Event) -> None:
    for n in range(40):  # interleaved: the pool may run the two types at once
        _bus.publish("seq.a", {"n": n})
        _bus.publish("seq.b", {"n": n})


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus
    _bus = event_bus
    event_bus.subscribe("flaky.go", on_go)
    event_bus.subscribe("flaky.defaults", on_defaults)
    event_bus.subscribe("flaky.breaker", on_breaker)
    event_bus.subscribe("feed.go", on_feed)
    event_bus.subscribe("fan.*", on_fan)


def shutdown() -> None:
    pass
"""

PARALLEL = '''
import threading
from collections import defaultdict
from typing import Any
from module_sdk import Event, EventBus

_bus: Any = None
_cond = threading.Condition()
_inside = 0
_peak = 0
_lock = threading.Lock()
_seen: dict[str, list[int]] = defaultdict(list)
_busy: dict[str, int] = defaultdict(int)
_most: dict[str, int] = defaultdict(int)


def on_work(event: Event) -> None:
    """Blocks until four callbacks are inside at once (or 10 s): only a pool lets them meet."""
    global _inside, _peak
    with _cond:
        _inside += 1
        _peak = max(_peak, _inside)
        _cond.notify_all()
        _cond.wait_for(lambda: _peak >= 4, timeout=10)
        _inside -= 1
    _bus.publish("parallel.done", {"type": event.type, "peak": _peak})


def on_seq(event: Event) -> None:
    with _lock:
        _busy[event.type] += 1
        _most[event.type] = max(_most[event.type], _busy[event.type])
    threading.Event().wait(0.001 * (event.data["n"] % 3))  # vary each callback's length
    with _lock:
        _seen[event.type].append(event.data["n"])
        _busy[event.type] -= 1
        if event.data["n"] == 39:
            _bus.publish(
                "parallel.order",
                {"type": event.type, "seen": _seen[event.type], "most": _most[event.type]},
            )


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus
    _bus = event_bus
    event_bus.subscribe("work.*", on_work)
    event_bus.subscribe("seq.*", on_seq)


def shutdown() -> None:
    pass
'''

GREEDY = """
import threading
from typing import Any
from module_sdk import Event, EventBus

_bus: Any = None


def on_threads(event: Event) -> None:
    names = [t.name for t in threading.enumerate() if t.name.startswith("module-sdk-callback")]
    _bus.publish("greedy.threads", {"count": len(names)})


def on_stuck(event: Event) -> None:
    _bus.publish("greedy.entered", {"type": event.type})
    threading.Event().wait()  # forever: only the process's end frees this thread


def initialize(event_bus: EventBus, config: dict[str, Any]) -> None:
    global _bus
    _bus = event_bus
    event_bus.subscribe("greedy.count", on_threads)
    event_bus.subscribe("stuck.*", on_stuck)


def shutdown() -> None:
    pass
"""

ASKED = {"recorder": 1, "flaky": 1, "parallel": 4, "greedy": 256}


@pytest.fixture(scope="module")
def running() -> Iterator[Project]:
    for project in projects():
        # A thread limit of at least 12 whatever the machine: parallel gets its 4, greedy not 256.
        per_core = math.ceil(12 / (psutil.cpu_count() or 1))
        recorder = {
            "name": "recorder",
            "path": project.probe("recorder"),
            "config": {
                "record": str(project.record_file),
                "patterns": ["flaky.*", "parallel.*", "greedy.*"],
            },
        }
        project.configure(
            [
                recorder,
                {"name": "flaky", "path": project.write_module("flaky.py", FLAKY)},
                {
                    "name": "parallel",
                    "path": project.write_module("parallel.py", PARALLEL),
                    "concurrency": 4,
                },
                {
                    "name": "greedy",
                    "path": project.write_module("greedy.py", GREEDY),
                    "concurrency": 256,
                    "stop_timeout": 15,
                },
            ],
            resources={"thread_per_core": per_core},
            error_handling={"retry_max_attempts": 4, "retry_wait_min": 0, "retry_wait_max": 0},
            metrics={"listen": "127.0.0.1:0"},
            supervision={"heartbeat_interval": 0.2, "heartbeat_timeout": 20, "stop_timeout": 3},
        )
        project.up()
        yield project


def _records(project: Project, event_type: str) -> list[dict[str, Any]]:
    return [r for r in project.recorded() if r["type"] == event_type]


def _wait_records(
    project: Project, event_type: str, count: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    def enough() -> list[dict[str, Any]] | None:
        found = _records(project, event_type)
        return found if len(found) >= count else None

    return wait_until(
        enough,
        timeout,
        f"{count} {event_type} events",
        lambda: "\n".join(project.log(n) for n in ("flaky", "parallel", "greedy")),
    )


def _publish(project: Project, event_type: str, data: str = "null") -> None:
    project.cli("publish", event_type, data, check=0)


def test_a_handler_failing_twice_then_succeeding_counts_two_retries(running: Project) -> None:
    _publish(running, "flaky.go")
    assert _wait_records(running, "flaky.done", 1)[0]["data"] == {"attempts": 3}
    row = running.wait_module("flaky", retries=2)
    assert row["callback_errors"] == 0 and row["breaker_opens"] == 0
    log = running.log("flaky")
    lines = [line for line in log.splitlines() if "retrying in" in line]
    assert len(lines) == 2, log
    assert all("flaky: fetch failed (attempt" in line for line in lines), lines


def test_bare_async_retry_takes_its_defaults_from_main_yaml(running: Project) -> None:
    before = running.module("flaky")["retries"]
    _publish(running, "flaky.defaults")
    # Three failures, then success: only the 4 attempts of main.yaml allow it (the default is 3).
    assert _wait_records(running, "flaky.defaults_done", 1)[0]["data"] == {"attempts": 4}
    running.wait_module("flaky", retries=before + 3)


def test_breaker_opens_after_fail_max_logged_once_and_counted(running: Project) -> None:
    _publish(running, "flaky.breaker")  # four calls in a row
    refused = _wait_records(running, "flaky.refused", 4)
    errors = [r["data"]["error"] for r in sorted(refused, key=lambda r: r["data"]["n"])]
    assert errors == ["ConnectionError"] * 2 + ["CircuitBreakerError"] * 2
    row = running.wait_module("flaky", breaker_opens=1)
    log = running.log("flaky")
    opened = [line for line in log.splitlines() if "circuit breaker" in line]
    assert len(opened) == 1, log
    assert "flaky: circuit breaker down open for 600s" in opened[0]
    assert "ConnectionError: the database is down" in opened[0]
    text = running.cli("status", check=0).stdout
    assert re.search(r"flaky: .*\d+ retries, circuit breakers opened 1 times", text), text
    assert row["callback_errors"] == 0


def test_the_counts_reach_the_metrics_endpoint(running: Project) -> None:
    if running.module("flaky")["retries"] == 0:  # run alone: count some first
        _publish(running, "flaky.go")
        running.wait_module("flaky", retries=2)
    row = running.module("flaky")
    url = running.status()["metrics"]["url"]
    wanted = (
        f'orchestrator_module_retries_total{{module="flaky"}} {float(row["retries"])}',
        f'orchestrator_module_breaker_opens_total{{module="flaky"}} {float(row["breaker_opens"])}',
        'orchestrator_module_retries_total{module="parallel"} 0.0',
    )

    def scraped() -> str | None:
        text = httpx.get(url + "metrics", timeout=10).text
        return text if all(line in text for line in wanted) else None

    wait_until(scraped, 15, f"{wanted} in /metrics")


def test_four_blocking_callbacks_overlap_on_a_pool_of_four(running: Project) -> None:
    _publish(running, "fan.work")  # work.a, .b, .c and .d, one after the other
    done = _wait_records(running, "parallel.done", 4, timeout=30)
    # Each callback waited until four were inside at once: peak 4 proves they overlapped (on
    # one callback thread the first would have given up after 10 s with peak 1).
    assert sorted(r["data"]["type"] for r in done) == ["work.a", "work.b", "work.c", "work.d"]
    assert all(r["data"]["peak"] == 4 for r in done), done


def test_events_of_one_type_keep_their_order_on_the_pool(running: Project) -> None:
    _publish(running, "feed.go")
    orders = _wait_records(running, "parallel.order", 2, timeout=30)
    for record in orders:
        assert record["data"]["seen"] == list(range(40)), record
        assert record["data"]["most"] == 1, record  # never two of one type at once
    assert sorted(r["data"]["type"] for r in orders) == ["seq.a", "seq.b"]


def test_the_thread_limit_holds_the_greedy_module_back(running: Project) -> None:
    status = running.status()
    limit = status["limits"]["max_threads"]
    expected = grant_threads(limit, ASKED)
    rows = {m["name"]: m for m in status["modules"]}
    for name, asked in ASKED.items():
        assert rows[name]["concurrency"] == {"asked": asked, "granted": expected[name]}, name
    assert expected["parallel"] == 4 and expected["greedy"] < 256
    assert sum(expected.values()) == limit
    text = running.cli("status", check=0).stdout
    granted = expected["greedy"]
    assert f"thread limit {limit} ({limit} granted)" in text, text
    assert status["limits"]["threads_granted"] == limit
    # One module's status: the figure is still the supervisor's, not the sum of its one row.
    header = running.cli("status", "greedy", check=0).stdout.splitlines()[0]
    assert f"thread limit {limit} ({limit} granted)" in header, header
    assert f"greedy: concurrency {granted} of 256 asked (held back by the thread limit)" in text, (
        text
    )
    # The grant is what the module's process really runs with.
    _publish(running, "greedy.count")
    assert _wait_records(running, "greedy.threads", 1)[0]["data"] == {"count": granted}


def test_a_module_stopped_with_every_callback_thread_stuck_still_exits_cleanly(
    running: Project,
) -> None:
    _publish(running, "fan.stuck")  # flaky publishes stuck.a .. stuck.d to greedy
    _wait_records(running, "greedy.entered", 4)
    pid = running.module("greedy")["pid"]
    running.cli("restart", "greedy", check=0)
    row = running.wait_module("greedy", state="running")
    last = row["last_exit"]
    assert last["pid"] == pid and last["code"] == 0 and last["reason"] == "stopped", last
    assert "a callback was still running at exit" in running.log("greedy")
