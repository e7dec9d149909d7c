"""The result rows: one figure each, with its baseline, ratio, target and verdict."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "FAIL", "info", "n/a", "error"]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Target:
    """`value <op> limit`, checked on the row's value or on its ratio to the baseline."""

    op: Literal["<=", "<", ">="]
    limit: float
    on: Literal["value", "ratio"] = "value"

    def met(self, value: float, ratio: float | None) -> bool:
        subject = value if self.on == "value" else ratio
        return subject is not None and _OPS[self.op](subject, self.limit)

    def describe(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.limit:g}"
        return f"{self.op} {format_value(self.limit, unit)}"


@dataclass
class Row:
    """One line of the table. `value` None means not measured (see `verdict_override`)."""

    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""
    verdict_override: Verdict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> Verdict:
        if self.verdict_override is not None:
            return self.verdict_override
        if self.value is None:
            return "n/a"
        if self.target is None:
            return "info"
        return "pass" if self.target.met(self.value, self.ratio) else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "target": None
            if self.target is None
            else {"op": self.target.op, "limit": self.target.limit, "on": self.target.on},
            "verdict": self.verdict,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def error_row(figure: str, exc: BaseException) -> Row:
    """The row of a benchmark that could not run to the end: a failure."""
    return Row(figure, None, "", note=f"{type(exc).__name__}: {exc}", verdict_override="error")


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value / 1000:,.1f}k msg/s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "us":
        return f"{value:.0f} us"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "%":
        return f"{value:.2f} %"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:g} {unit}".strip()


_HEADERS = ("figure", "value", "baseline", "ratio", "target", "result")


def render(rows: Sequence[Row]) -> str:
    """A plain-text table; notes (drops, baselines' meaning, errors) go under it."""
    lines: list[tuple[str, ...]] = [_HEADERS]
    notes: list[str] = []
    for row in rows:
        baseline = format_value(row.baseline, row.unit) if row.baseline is not None else "-"
        if row.baseline_label and row.baseline is not None:
            baseline = f"{baseline} ({row.baseline_label})"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        value = format_value(row.value, row.unit)
        if row.value is None and row.verdict_override == "n/a":
            value = row.note or "n/a"
        lines.append(
            (
                row.figure,
                value,
                baseline,
                ratio,
                row.target.describe(row.unit) if row.target else "-",
                row.verdict,
            )
        )
        if row.note and not (row.value is None and row.verdict_override == "n/a"):
            notes.append(f"  {row.figure}: {row.note}")
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADERS))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(line.rstrip() for line in out)
