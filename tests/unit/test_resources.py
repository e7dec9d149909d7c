"""Tests of orchestrator.resources: the process and thread limits, and per-process sampling."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import psutil
import pytest
from helpers import wait_until

from orchestrator import fd_budget
from orchestrator.config import ResourcesSection
from orchestrator.resources import (
    Limits,
    ProcessSampler,
    compute_limits,
    grant_threads,
    machine_limits,
)

MB = 1024 * 1024
GIB = 1024 * MB
BASE = ResourcesSection(process_memory_mb=512, reserved_ram_percent=0.25, thread_per_core=2)


def _limits(settings: ResourcesSection = BASE, available: int = 8 * GIB, cpus: int = 4) -> Limits:
    return compute_limits(settings, available_bytes=available, total_bytes=16 * GIB, cpu_count=cpus)


def test_formula_with_concrete_numbers() -> None:
    # 8192 MB x (1 - 0.25) / 512 MB = 12
    limits = _limits()
    assert limits == Limits(
        max_processes=12, max_threads=8, available_mb=8192, total_mb=16384, cpu_count=4
    )
    assert limits.as_dict() == {
        "max_processes": 12,
        "max_threads": 8,
        "available_mb": 8192,
        "total_mb": 16384,
        "cpu_count": 4,
        "open_files": None,  # not known to compute_limits: machine_limits reads it
        "bound_by": "memory",
    }


@pytest.mark.parametrize(
    ("available", "reserved", "process_mb", "expected"),
    [
        (8 * GIB, 0.25, 512, 12),
        (8 * GIB, 0.0, 512, 16),
        (8 * GIB, 0.5, 512, 8),
        (8 * GIB, 0.25, 1024, 6),
        (8 * GIB, 0.25, 100, 61),  # 6144 / 100 = 61.44, rounded down
        (4 * GIB, 0.25, 256, 12),
        (8 * GIB - 1, 0.25, 512, 11),  # just under: rounded down
        (64 * GIB, 0.2, 500, 104),  # 65536 x 0.8 / 500 = 104.86
    ],
)
def test_processes_follow_the_formula(
    available: int, reserved: float, process_mb: int, expected: int
) -> None:
    settings = replace(BASE, reserved_ram_percent=reserved, process_memory_mb=process_mb)
    assert _limits(settings, available).max_processes == expected


@pytest.mark.parametrize("available", [0, 1, 10 * MB, 600 * MB])
def test_at_least_one_process_when_memory_is_tiny(available: int) -> None:
    assert _limits(available=available).max_processes == 1


@pytest.mark.parametrize(("cap", "expected"), [(1, 1), (4, 4), (12, 12), (13, 12), (100, 12)])
def test_explicit_max_processes_caps_but_does_not_raise(cap: int, expected: int) -> None:
    assert _limits(replace(BASE, max_processes=cap)).max_processes == expected


def test_explicit_cap_with_tiny_memory_still_gives_one() -> None:
    assert _limits(replace(BASE, max_processes=8), available=MB).max_processes == 1


@pytest.mark.parametrize(
    ("cpus", "per_core", "expected"), [(1, 1, 1), (4, 2, 8), (3, 4, 12), (64, 2, 128)]
)
def test_threads_are_cpu_count_times_thread_per_core(
    cpus: int, per_core: int, expected: int
) -> None:
    limits = _limits(replace(BASE, thread_per_core=per_core), cpus=cpus)
    assert limits.max_threads == expected
    assert limits.cpu_count == cpus


def test_exact_multiple_is_not_lost_to_float_rounding() -> None:
    # 10 GiB x (1 - 0.8) = 2048 MB = exactly 4 x 512 MB
    settings = replace(BASE, reserved_ram_percent=0.8)
    assert _limits(settings, available=10 * GIB).max_processes == 4


def test_machine_limits_uses_this_machine() -> None:
    limits = machine_limits(ResourcesSection())
    assert limits.max_processes >= 1
    assert limits.cpu_count == (psutil.cpu_count() or 1)
    assert limits.max_threads == limits.cpu_count * ResourcesSection().thread_per_core
    assert 0 < limits.available_mb <= limits.total_mb
    assert limits.open_files == fd_budget.open_files_limit()


def test_sampler_samples_this_process() -> None:
    sampler = ProcessSampler()
    first = sampler.sample(os.getpid())
    assert set(first) == {"rss_mb", "cpu_percent"}
    assert first["rss_mb"] > 0
    assert first["cpu_percent"] >= 0
    second = sampler.sample(os.getpid())  # reuses the handle
    assert second["rss_mb"] > 0


def test_sampler_returns_empty_for_a_gone_process() -> None:
    process = subprocess.Popen(["true"])
    assert process.wait() == 0  # exited and reaped: the pid is gone
    sampler = ProcessSampler()
    assert sampler.sample(process.pid) == {}


def test_sampler_forgets_a_process_that_exits() -> None:
    process = subprocess.Popen(["sleep", "30"])
    try:
        sampler = ProcessSampler()
        assert set(sampler.sample(process.pid)) == {"rss_mb", "cpu_percent"}
        # right after the spawn the child may still be exec'ing, with no resident memory yet
        wait_until(lambda: sampler.sample(process.pid)["rss_mb"] > 0, what="child rss > 0")
    finally:
        process.kill()
        process.wait()
    assert sampler.sample(process.pid) == {}
    sampler.forget(process.pid)  # forgetting an unknown pid is harmless


# -- the thread limit: callback threads granted per module ----------------------------------


@pytest.mark.parametrize(
    ("limit", "asked", "granted"),
    [
        (8, {"a": 1, "b": 1}, {"a": 1, "b": 1}),  # today's behaviour: one each
        (8, {"a": 4, "b": 2}, {"a": 4, "b": 2}),  # within the limit: what each asked
        (8, {"a": 1, "p": 4, "g": 256}, {"a": 1, "p": 4, "g": 3}),  # the spare 5 in turn
        (6, {"a": 10, "b": 10}, {"a": 3, "b": 3}),  # shared evenly
        (7, {"a": 10, "b": 10}, {"a": 4, "b": 3}),  # the odd one to the first in config order
        (9, {"big": 100, "small": 2}, {"big": 7, "small": 2}),  # the big one cannot starve it
        (2, {"a": 4, "b": 4, "c": 4}, {"a": 1, "b": 1, "c": 1}),  # under one each: one each
        (4, {}, {}),
    ],
)
def test_grant_threads_is_max_min_fair_within_the_limit(
    limit: int, asked: dict[str, int], granted: dict[str, int]
) -> None:
    assert grant_threads(limit, asked) == granted
    assert list(grant_threads(limit, asked)) == list(asked)  # config order kept


def test_grant_threads_never_exceeds_the_limit_nor_an_ask() -> None:
    asks = {f"m{i}": (i * 7) % 13 + 1 for i in range(40)}
    for limit in range(1, 400, 7):
        granted = grant_threads(limit, asks)
        assert sum(granted.values()) <= max(limit, len(asks))
        assert all(1 <= granted[name] <= asks[name] for name in asks)
        if sum(asks.values()) <= limit:
            assert granted == asks


def test_a_forks_shared_pages_count_once_against_a_memory_limit() -> None:
    """A module that forks a pool of workers shares its pages with them until they write: by
    RSS each fork counted them again (40 idle forks of one module: 586 MB, killed at 400)."""
    import os
    import signal

    from orchestrator.resources import ProcessSampler

    hoard = bytearray(64 * 1024 * 1024)
    hoard[::4096] = b"x" * len(hoard[::4096])  # touched: resident
    forks = []
    read, write = os.pipe()
    try:
        for _ in range(4):
            pid = os.fork()
            if pid == 0:  # pragma: no cover (the fork)
                os.close(write)
                os.read(read, 1)  # until the test ends
                os._exit(0)
            forks.append(pid)
        sampler = ProcessSampler()
        by_rss, counted = sampler.tree_rss_mb(os.getpid()), sampler.tree_memory_mb(os.getpid())
        assert by_rss is not None and counted is not None
        assert by_rss > 4 * 64  # the hoard counted in every fork
        assert counted < by_rss / 2
        # Within the limit by RSS (an upper bound of PSS), PSS is not read: it costs ten times.
        within = sampler.tree_memory_mb(os.getpid(), limit=by_rss * 2)
        assert within is not None and within > counted
    finally:
        os.close(write)
        for pid in forks:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(read)
