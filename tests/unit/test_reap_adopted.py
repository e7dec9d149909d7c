"""A module process reaps the zombies it adopts, and leaves its own code's children to it."""

from __future__ import annotations

import subprocess
import sys

# In a process of its own: the test runner's own children must not be counted.
SCRIPT = """
import os, time
from module_sdk.process import reap_adopted, proc_stat

children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    children.append(pid)
    time.sleep(0.01)  # first seen in this order: the oldest first
deadline = time.monotonic() + 10
while any((proc_stat(pid) or proc_stat(os.getpid())).state != "Z" for pid in children):
    assert time.monotonic() < deadline, "children did not exit"
    time.sleep(0.01)
seen = {}
print(reap_adopted(seen, 0.0, 5) == [])  # under the bound: left for their parent code to wait for
print(sorted(reap_adopted(seen, 1.0, 1)) == sorted(children[:2]))  # past it: the oldest go
print(os.waitpid(children[2], 0)[1] >> 8)  # the last one's status is still there to read
"""


def test_own_zombies_are_left_to_the_code_that_waits_for_them_up_to_a_bound() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.split() == ["True", "True", "3"], result.stdout + result.stderr
