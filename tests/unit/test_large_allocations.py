"""The supervisor has glibc map every large allocation on its own: after a large block was freed,
glibc would otherwise serve blocks up to that size from its heap, which a stream of large child
channel messages grew by a gigabyte and never gave back. Run in a fresh interpreter, so that the
test process's own allocator is left as it is."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys
from orchestrator.resources import keep_large_allocations_apart
if sys.argv[1] == "apart" and not keep_large_allocations_apart():
    print("no glibc")
    raise SystemExit
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(16 << 20))  # glibc now serves up to 16 MiB from its heap, unless told
block = libc.malloc(2 << 20)
heap = next(line for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
start, end = (int(x, 16) for x in heap.split()[0].split("-"))
print("heap" if start <= block < end else "mapping")
"""


def _where(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_a_large_block_gets_a_mapping_of_its_own_whatever_was_freed_before() -> None:
    if _where("apart") == "no glibc":
        pytest.skip("no glibc mallopt here")
    assert _where("as is") == "heap"  # what the probe shows without the setting
    assert _where("apart") == "mapping"
