"""How `ForkServer.fork_many` cuts its requests into batches the template accepts (fork_requests)."""

from __future__ import annotations

from module_sdk.protocol import FORK_BATCH_MAX
from orchestrator import fork_requests

_BUDGET = 100 * 1024


def _entry(name: str, cwd_bytes: int = 0) -> dict[str, object]:
    return {"name": name, "cwd": "/" + "x" * cwd_bytes}


def test_batches_hold_at_most_the_pipes_one_message_carries_in_order() -> None:
    entries = [_entry(f"m{i}") for i in range(FORK_BATCH_MAX * 2 + 3)]
    batches = fork_requests.batches(entries, _BUDGET)
    assert [len(b) for b in batches] == [FORK_BATCH_MAX, FORK_BATCH_MAX, 3]
    assert [e for b in batches for e in b] == entries


def test_large_entries_cut_a_batch_at_the_budget() -> None:
    entries = [_entry(f"m{i}", cwd_bytes=40 * 1024) for i in range(5)]
    assert [len(b) for b in fork_requests.batches(entries, _BUDGET)] == [2, 2, 1]


def test_one_entry_larger_than_the_budget_still_goes_alone() -> None:
    entries = [_entry("small"), _entry("huge", cwd_bytes=2 * _BUDGET), _entry("after")]
    assert [len(b) for b in fork_requests.batches(entries, _BUDGET)] == [1, 1, 1]
