"""`orchestrator test`'s report from pytest's JUnit XML (`orchestrator.testrun.report`)."""

from __future__ import annotations

from pathlib import Path

from orchestrator.testrun.report import render, tally

# What pytest (xunit1) writes when a test raises KeyboardInterrupt after one passed: the
# interrupted session is a testcase with no name, no file, no outcome.
INTERRUPTED = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="0" failures="0" skipped="0" tests="1" time="0.284">
<testcase classname="mods.kb.tests.test_kb" name="test_ok" file="mods/kb/tests/test_kb.py"
 line="0" time="0.001" /><testcase time="0.000" /></testsuite></testsuites>"""


def test_an_interrupted_session_is_said_and_no_phantom_test_passes(tmp_path: Path) -> None:
    """The nameless testcase was counted under "(other)" as passed, and the verdict said only
    "pytest exit 2\"."""
    junit = tmp_path / "junit.xml"
    junit.write_text(INTERRUPTED)
    owners = {tmp_path / "mods" / "kb" / "tests": "kb", tmp_path / "mods" / "good": "good"}
    results = tally(junit, tmp_path, owners)
    assert set(results) == {"kb"}
    assert (results["kb"].passed, results["kb"].total) == (1, 1)
    shown = render(["kb", "good"], [], results, pytest_exit=2)
    assert "(other)" not in shown
    assert shown.splitlines()[-1] == (
        "1 passed, 0 failed, 0 skipped, 0 errors: FAILED: interrupted (pytest exit 2)"
    )


def test_a_pytest_that_a_test_ended_is_named_with_how_it_ended() -> None:
    """It said "pytest did not run (exit -9)" / "(exit 0)", although pytest did run."""
    from orchestrator.cli.test import _no_report

    assert _no_report(-9, False).startswith("pytest was killed by SIGKILL before it wrote")
    assert "outlasted the --timeout" in _no_report(-9, True)
    assert _no_report(0, False).startswith("pytest exited 0 before it wrote its report")
    assert "os._exit()" in _no_report(0, False)
