"""Scrubbing secrets out of module output: what one 62 KB chunk (a module flooding its output)
costs the supervisor's loop with the secrets of a large `.env`, against the same chunk with a
handful. Every chunk a module writes is scrubbed on the loop, so this cost must not grow with the
number of secrets (one alternation regex took 1.1 s a chunk with 6,000)."""

from __future__ import annotations

import random
import string
import time
from typing import Any

from bench import stats
from bench.table import Row, Target
from orchestrator.config import Redactor

CHUNK_BYTES = 62_000
FEW, MANY = 10, 6000
ROUNDS = 15
TARGET_MS = 5.0
LINE = "printer line {} of a module that prints a lot, padded to look like a log line\n"


def _secrets(count: int, rng: random.Random) -> list[str]:
    alphabet = string.ascii_letters + string.digits
    return ["".join(rng.choices(alphabet, k=rng.randint(8, 40))) for _ in range(count)]


def _chunk_ms(redactor: Redactor, chunk: str) -> float:
    """The median time of one `scrub` of `chunk`, in ms."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        redactor.scrub(chunk)
        times.append((time.perf_counter() - started) * 1000)
    return stats.median(times)


def measure() -> dict[str, Any]:
    """Median ms per chunk with FEW and with MANY secrets; the chunk holds one of them."""
    rng = random.Random(7)
    secrets = _secrets(MANY, rng)
    lines = "".join(LINE.format(i) for i in range(CHUNK_BYTES // len(LINE) + 1))[:CHUNK_BYTES]
    chunk = lines[: CHUNK_BYTES // 2] + secrets[0] + lines[CHUNK_BYTES // 2 :]
    result = {}
    for count in (FEW, MANY):
        redactor = Redactor(secrets[:count])
        if secrets[0] in redactor.scrub(chunk):
            raise AssertionError("the secret in the chunk was not scrubbed")
        result[f"{count}_ms"] = _chunk_ms(redactor, chunk)
    return result


def rows(result: dict[str, Any]) -> list[Row]:
    return [
        Row(
            f"scrub: one {CHUNK_BYTES // 1000} KB chunk of output, {MANY:,} secrets",
            result[f"{MANY}_ms"],
            "ms",
            baseline=result[f"{FEW}_ms"],
            baseline_label=f"the same chunk, {FEW} secrets",
            target=Target("<=", TARGET_MS),
            note=f"median of {ROUNDS}; the loop's budget for a chunk, whatever the number of "
            "secrets (a few are cheaper still: the search skips ahead to their first bytes)",
            extra=result,
        )
    ]
