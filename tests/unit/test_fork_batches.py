"""How `ForkServer.fork_many` cuts its requests into batches the template accepts."""

from __future__ import annotations

from module_sdk.protocol import FORK_BATCH_MAX
from orchestrator import forkserver


def _entry(name: str, env_bytes: int = 0) -> dict[str, object]:
    return {"name": name, "env": {"BIG": "x" * env_bytes}, "cwd": "/"}


def test_batches_hold_at_most_the_pipes_one_message_carries_in_order() -> None:
    entries = [_entry(f"m{i}") for i in range(FORK_BATCH_MAX * 2 + 3)]
    batches = forkserver._batches(entries)
    assert [len(b) for b in batches] == [FORK_BATCH_MAX, FORK_BATCH_MAX, 3]
    assert [e for b in batches for e in b] == entries


def test_large_environments_cut_a_batch_before_the_template_would_refuse_it() -> None:
    entries = [_entry(f"m{i}", env_bytes=200 * 1024) for i in range(5)]
    batches = forkserver._batches(entries)
    assert [len(b) for b in batches] == [2, 2, 1]  # 512 KiB a batch; the template reads 1 MiB


def test_one_entry_larger_than_a_batch_still_goes_alone() -> None:
    entries = [_entry("small"), _entry("huge", env_bytes=600 * 1024), _entry("after")]
    assert [len(b) for b in forkserver._batches(entries)] == [1, 1, 1]
