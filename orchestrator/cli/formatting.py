"""Small formatting helpers of the commands' human-readable output."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`42s`, `5m03s`, `2h10m`, `3d04h`."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
