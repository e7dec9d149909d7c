"""The endpoint's sampler finds each module's tree from the module down (its cgroup, or the
kernel's lists of children), never by walking every process on the machine: with 5,800 processes
on the host one scrape took 13 s, and a scrape a second cost the supervisor 40% of a core."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from orchestrator import resources
from orchestrator.metrics import sampling
from orchestrator.metrics.sampling import SAMPLE_EVERY, TreeSampler
from orchestrator.resources import tree_pids

# A child that forks a grandchild from a thread that stays alive: the grandchild is listed in
# that thread's `children`, not the main thread's. The grandchild says its pid once started (its
# memory no longer grows).
FORKS_FROM_A_THREAD = """
import subprocess, sys, threading, time
GRANDCHILD = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
def fork():
    subprocess.Popen([sys.executable, "-c", GRANDCHILD])
    time.sleep(60)
threading.Thread(target=fork, daemon=True).start()
time.sleep(60)
"""


@pytest.fixture
def family() -> Iterator[tuple[int, int]]:
    """(child, grandchild) pids."""
    child = subprocess.Popen([sys.executable, "-c", FORKS_FROM_A_THREAD], stdout=subprocess.PIPE)
    grandchild = 0
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        yield child.pid, grandchild
    finally:
        if grandchild:
            psutil.Process(grandchild).kill()
        child.kill()
        child.wait()


def no_process_table(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("walked the whole process table")

    monkeypatch.setattr(psutil, "process_iter", refused)


def rss(*pids: int) -> int:
    return sum(psutil.Process(pid).memory_info().rss for pid in pids)


def test_the_tree_is_read_from_the_kernels_lists_of_children(
    family: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    child, grandchild = family
    no_process_table(monkeypatch)
    assert tree_pids(child) == [child, grandchild]
    assert tree_pids(999_999_999) is None
    sample = TreeSampler().sample([child, 999_999_999])
    assert list(sample) == [child]
    assert sample[child]["rss_mb"] * 1024 * 1024 >= 0.9 * rss(child, grandchild)


def test_a_module_in_a_cgroup_is_sampled_from_its_list(
    family: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    child, grandchild = family
    no_process_table(monkeypatch)
    monkeypatch.setattr(resources, "module_cgroup_pids", lambda pid: [grandchild, pid])
    monkeypatch.setattr(resources, "descendants", lambda pid: pytest.fail("walked the tree"))
    sample = TreeSampler().sample([child])
    assert sample[child]["rss_mb"] * 1024 * 1024 >= 0.9 * rss(child, grandchild)


def test_the_process_table_is_the_last_resort(
    family: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    child, grandchild = family
    monkeypatch.setattr(resources, "children_listed", lambda: False)  # a kernel without them
    sample = TreeSampler().sample([child])
    assert sample[child]["rss_mb"] * 1024 * 1024 >= 0.9 * rss(child, grandchild)


def test_samples_are_served_again_within_the_interval(
    family: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    child, grandchild = family
    walked: list[int] = []
    members = sampling.tree_pids

    def counting(pid: int) -> list[int] | None:
        walked.append(pid)
        return members(pid)

    monkeypatch.setattr(sampling, "tree_pids", counting)
    now = [100.0]
    sampler = TreeSampler(clock=lambda: now[0])
    first = sampler.sample([child])
    now[0] += SAMPLE_EVERY / 2
    assert sampler.sample([child]) == first and walked == [child]
    assert sampler.sample([child, grandchild]).keys() == {child, grandchild}  # a new module
    assert sorted(walked[1:]) == sorted([child, grandchild])
    now[0] += SAMPLE_EVERY
    sampler.sample([child])
    assert walked[-1] == child and len(walked) == 4


def test_status_and_memory_limits_read_the_same_tree(
    family: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `status` and the memory limits walked every process on the machine (psutil's recursive
    # children) wherever a module has no cgroup of its own.
    child, grandchild = family
    monkeypatch.setattr(resources, "module_cgroup_pids", lambda pid: None)
    monkeypatch.setattr(psutil.Process, "children", lambda *a, **k: pytest.fail("whole table"))
    measured = resources.ProcessSampler().tree_rss_mb(child)
    assert measured is not None and measured * 1024 * 1024 >= 0.9 * rss(child, grandchild)
