"""Unit tests of module_sdk.dispatch.CallbackPool: overlap across event types, order within one,
back-pressure, and stopping. Overlap is proven by callbacks meeting each other, never by time."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
from helpers import wait_until

from module_sdk.dispatch import CallbackPool
from module_sdk.event import Event


def _event(event_type: str, data: object = None) -> Event:
    return Event(event_type, data, "test", "id", 0.0)


def _run(event: Event, callbacks: tuple[Callable[[Event], None], ...]) -> None:
    for callback in callbacks:
        callback(event)


@pytest.fixture
def pools() -> Iterator[Callable[..., CallbackPool]]:
    made: list[CallbackPool] = []

    def make(workers: int, **options: int) -> CallbackPool:
        pool = CallbackPool(workers, _run, **options)
        pool.start()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop(5)


def test_four_event_types_run_at_once_on_four_workers(
    pools: Callable[..., CallbackPool],
) -> None:
    pool = pools(4)
    all_inside = threading.Barrier(4, timeout=10)  # broken unless four callbacks meet
    passed: list[str] = []

    def meet(event: Event) -> None:
        all_inside.wait()
        passed.append(event.type)

    for name in ("work.a", "work.b", "work.c", "work.d"):
        pool.submit(name, _event(name), (meet,))
    wait_until(lambda: len(passed) == 4 or all_inside.broken, 15, "four callbacks to meet")
    assert not all_inside.broken
    assert sorted(passed) == ["work.a", "work.b", "work.c", "work.d"]


def test_one_event_type_runs_in_order_and_never_on_two_workers_at_once(
    pools: Callable[..., CallbackPool],
) -> None:
    pool = pools(4)
    lock = threading.Lock()
    inside: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    seen: dict[str, list[int]] = defaultdict(list)

    def record(event: Event) -> None:
        with lock:
            inside[event.type] += 1
            most[event.type] = max(most[event.type], inside[event.type])
        threading.Event().wait(0.0005 * (event.data % 3))  # shuffle the workers' timing
        with lock:
            seen[event.type].append(event.data)
            inside[event.type] -= 1

    types = ("order.a", "order.b", "order.c")
    for n in range(300):
        name = types[n % 3]
        pool.submit(name, _event(name, n // 3), (record,))
    wait_until(lambda: sum(len(v) for v in seen.values()) == 300, 30, "every event")
    for name in types:
        assert seen[name] == list(range(100)), name
        assert most[name] == 1, name


def test_a_full_pool_makes_the_submitter_wait_until_there_is_room(
    pools: Callable[..., CallbackPool],
) -> None:
    pool = pools(1, max_pending=2)
    release = threading.Event()
    ran: list[int] = []

    def block(event: Event) -> None:
        release.wait(10)
        ran.append(event.data)

    pool.submit("a.x", _event("a.x", 0), (block,))
    wait_until(lambda: pool.busy_since() is not None, 5, "the first event on the worker")
    pool.submit("a.x", _event("a.x", 1), (block,))
    pool.submit("a.x", _event("a.x", 2), (block,))  # two pending: full
    third_in = threading.Event()

    def submit_third() -> None:
        pool.submit("a.x", _event("a.x", 3), (block,))
        third_in.set()

    submitter = threading.Thread(target=submit_third)
    submitter.start()
    assert not third_in.wait(0.2)  # must still be waiting (no room) ...
    assert pool.pending() == 2
    release.set()  # ... until the worker takes one
    assert third_in.wait(10)
    submitter.join(10)
    wait_until(lambda: ran == [0, 1, 2, 3], 10, "all four, in order")


def test_stop_drops_what_waits_and_reports_a_callback_still_running() -> None:
    pool = CallbackPool(2, _run)
    pool.start()
    release = threading.Event()
    ran: list[int] = []

    def block(event: Event) -> None:
        release.wait(10)
        ran.append(event.data)

    for n in range(5):
        pool.submit("a.x", _event("a.x", n), (block,))
    wait_until(lambda: pool.busy_since() is not None, 5, "a callback running")
    assert pool.stop(0.05) is False  # still inside block()
    pool.submit("a.x", _event("a.x", 99), (block,))  # after stop: ignored, never waits
    release.set()
    wait_until(lambda: not any(t.is_alive() for t in pool._threads), 10, "the workers to end")
    assert ran == [0]  # the one running finished; the waiting ones were dropped
    assert pool.stop(1) is True


def test_a_callback_that_raises_past_the_run_function_leaves_the_worker_serving(
    pools: Callable[..., CallbackPool],
) -> None:
    pool = pools(1)
    ran: list[str] = []

    def bad(event: Event) -> None:
        raise SystemExit(3)

    pool.submit("a.x", _event("a.x"), (bad,))
    pool.submit("a.x", _event("a.y"), (lambda event: ran.append(event.type),))
    wait_until(lambda: ran == ["a.y"], 5, "the next event to run")


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        CallbackPool(0, _run)
    with pytest.raises(ValueError):
        CallbackPool(2, _run, max_pending=0)
