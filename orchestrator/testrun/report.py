"""Per-module results from pytest's JUnit XML, and the consolidated report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

CORE = "(core)"
OTHER = "(other)"


@dataclass
class Tally:
    """Counts and time of one module's tests."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped + self.errors

    def add(self, other: Tally) -> None:
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors += other.errors
        self.seconds += other.seconds


def tally(junit_xml: Path, rootdir: Path, owners: dict[Path, str]) -> dict[str, Tally]:
    """Count each testcase of `junit_xml` for the module whose test path holds its file.

    `owners` maps each test path (a file or a directory) to a module name; the longest match wins.
    """
    results: dict[str, Tally] = {}
    ordered = sorted(owners.items(), key=lambda item: len(str(item[0])), reverse=True)
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        if case.get("name") is None:  # what pytest writes for an interrupted session: no test
            continue
        file = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
        path = (rootdir / file).resolve()
        owner = next(
            (name for root, name in ordered if path == root or root in path.parents), OTHER
        )
        entry = results.setdefault(owner, Tally())
        entry.seconds += float(case.get("time") or 0.0)
        outcome = {child.tag for child in case}
        test_id = f"{file}::{case.get('name')}"
        if "failure" in outcome:
            entry.failed += 1
            entry.failures.append(test_id)
        elif "error" in outcome:
            entry.errors += 1
            entry.failures.append(test_id)
        elif "skipped" in outcome:
            entry.skipped += 1
        else:
            entry.passed += 1
    return results


def verdict(total: Tally, pytest_exit: int, timed_out: float | None = None) -> str:
    """`passed` only if pytest itself exited 0 and nothing failed: pytest's own failures (no
    test collected, a usage or collection error) fail the run as much as a failed test."""
    if timed_out is not None:
        return f"FAILED: timed out after {timed_out:g}s (--timeout)"
    if total.failed or total.errors:
        return "FAILED"
    if pytest_exit == 0:
        return "passed"
    if pytest_exit == 2:  # a KeyboardInterrupt (a test's, or Ctrl+C): the tests after it never ran
        return "FAILED: interrupted (pytest exit 2)"
    if pytest_exit == 5:
        return "FAILED: no test ran (pytest exit 5)"
    return f"FAILED: pytest exit {pytest_exit}"


def render(
    order: list[str],
    untested: list[str],
    results: dict[str, Tally],
    pytest_exit: int = 0,
    timed_out: float | None = None,
) -> str:
    """The report: one row per module (`no tests` for those without), then the total."""
    header = ("MODULE", "TESTS", "PASSED", "FAILED", "SKIPPED", "ERRORS", "TIME")
    rows = [header]
    total = Tally()
    for name in [*order, *(n for n in results if n not in order)]:
        entry = results.get(name, Tally())
        total.add(entry)
        rows.append(
            (
                name,
                str(entry.total),
                str(entry.passed),
                str(entry.failed),
                str(entry.skipped),
                str(entry.errors),
                f"{entry.seconds:.2f}s",
            )
        )
    for name in untested:
        rows.append((name, "no tests", "", "", "", "", ""))
    rows.append(
        (
            "total",
            str(total.total),
            str(total.passed),
            str(total.failed),
            str(total.skipped),
            str(total.errors),
            f"{total.seconds:.2f}s",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.append(
        f"{total.passed} passed, {total.failed} failed, {total.skipped} skipped, "
        f"{total.errors} errors: {verdict(total, pytest_exit, timed_out)}"
    )
    return "\n".join(lines)


def as_dict(
    order: list[str],
    untested: list[str],
    results: dict[str, Tally],
    pytest_exit: int = 0,
    timed_out: float | None = None,
) -> dict[str, Any]:
    """The report as `test --json` prints it: `modules`, one entry per module in the order of the
    table (`tests: null` for those without), then the `total`, whether all `passed` (the exit
    code says the same), `pytest_exit` and `timed_out` (the --timeout that interrupted it, or
    null)."""
    modules: list[dict[str, Any]] = []
    total = Tally()
    for name in [*order, *(n for n in results if n not in order)]:
        entry = results.get(name, Tally())
        total.add(entry)
        modules.append({"name": name, **_counts(entry), "failures": entry.failures})
    modules.extend({"name": name, "tests": None} for name in untested)
    return {
        "modules": modules,
        "total": _counts(total),
        "passed": verdict(total, pytest_exit, timed_out) == "passed",
        "pytest_exit": pytest_exit,
        "timed_out": timed_out,
    }


def _counts(entry: Tally) -> dict[str, Any]:
    return {
        "tests": entry.total,
        "passed": entry.passed,
        "failed": entry.failed,
        "skipped": entry.skipped,
        "errors": entry.errors,
        "seconds": round(entry.seconds, 3),
    }
