"""What goes with a request to the fork server's template (orchestrator/forkserver.py): a
module's environment in a memfd of its own, and requests cut into batches one message carries."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgpack

from module_sdk.protocol import FORK_BATCH_MAX


def environment_file(env: Mapping[str, str]) -> int:
    """A memfd (close-on-exec) holding `env` as a msgpack map, for the forked process to read:
    only it ever does."""
    fd = os.memfd_create("module-env", os.MFD_CLOEXEC)
    try:
        data = memoryview(msgpack.packb(dict(env)))
        while data:
            data = data[os.write(fd, data) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def batches(entries: list[dict[str, object]], budget: int) -> list[list[dict[str, object]]]:
    """`entries` in order, cut where a batch would exceed `FORK_BATCH_MAX` pipes or `budget`
    bytes (an entry larger than that goes alone)."""
    batches: list[list[dict[str, object]]] = []
    size = 0
    for entry in entries:
        length = len(msgpack.packb(entry))
        if not batches or len(batches[-1]) >= FORK_BATCH_MAX or size + length > budget:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += length
    return batches
