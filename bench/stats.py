"""Summary statistics of timing samples."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(samples: Sequence[float]) -> float:
    """The median; raises ValueError on no samples."""
    if not samples:
        raise ValueError("no samples")
    return statistics.median(samples)


def percentile(samples: Sequence[float], pct: float) -> float:
    """The `pct` percentile by linear interpolation between the closest ranks (numpy's default).

    With 30 samples the 99th percentile lies between the largest and the second largest sample.
    """
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Count, min, median, p90, p99 and max, for results.json."""
    return {
        "n": len(samples),
        "min": min(samples),
        "median": median(samples),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }
