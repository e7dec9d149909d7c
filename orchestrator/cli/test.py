"""`orchestrator test [NAME...]`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import click

import orchestrator
from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option, echo_json, raising_on_stop_signals
from orchestrator.testrun.discover import DiscoveryError, discover
from orchestrator.testrun.report import CORE, Tally, as_dict, render, tally
from orchestrator.testrun.session import SESSION_BOUND

DEFAULT_TIMEOUT = 900.0  # seconds a whole run may take before it is interrupted (--timeout)


@click.command(name="test")
@click.argument("names", nargs=-1)
@config_option
@click.option(
    "--junit-xml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write one JUnit XML report here, for CI.",
)
@click.option("--core", is_flag=True, help="Add orchestrator's own test suite to the run.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Interrupt the run (as Ctrl+C does, so that teardown runs) after this many seconds; 0: never.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as one JSON document; pytest's own output goes to stderr.",
)
def test(  # noqa: PLR0917
    app: App,
    names: tuple[str, ...],
    junit_xml: Path | None,
    core: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Run the tests each enabled module lists in get_tests(), or only those of NAMES.

    All of them run in one pytest session, whose output is shown as it runs; then a report gives
    per module the tests passed, failed, skipped and in error, and the time taken. Exits 0 when all
    pass, 1 when any fails. A module without get_tests() is listed as "no tests". Nothing the
    tests started is left running when it returns.
    """
    config = app.load()
    enabled = {spec.name: spec for spec in config.enabled_modules}
    unknown = [name for name in names if name not in enabled]
    if unknown:
        known = ", ".join(enabled) or "none"
        abort(
            f"no enabled module named {', '.join(map(repr, unknown))} (modules: {known})",
            exit_codes.USAGE,
        )
    specs = [enabled[name] for name in names] if names else list(enabled.values())
    try:
        found = discover(specs)
    except DiscoveryError as exc:
        abort(str(exc))
    owners = {path: entry.name for entry in found for path in entry.paths or ()}
    order = [entry.name for entry in found if entry.paths]
    untested = [entry.name for entry in found if not entry.paths]
    if core:
        suite = Path(orchestrator.__file__).resolve().parent.parent / "tests"
        if not suite.is_dir():
            abort(
                f"--core: orchestrator's own tests are not here ({suite}); run from a source checkout"
            )
        owners[suite] = CORE
        order.append(CORE)
    if not owners:
        _report(as_json, order, untested, {}, 0)  # nothing to test: nothing failed
        return
    if importlib.util.find_spec("pytest") is None:  # a dependency: only a broken install lacks it
        abort(f"pytest is not installed for {sys.executable}: pip install pytest")
    with tempfile.TemporaryDirectory(prefix="orchestrator-test-") as scratch:
        report, ended = Path(scratch) / "junit.xml", Path(scratch) / "session.json"
        rootdir = config.config_dir.parent
        command = [
            sys.executable,
            "-m",
            "orchestrator.testrun.session",
            str(ended),
            str(timeout),
            str(os.getpid()),
            "--",
            sys.executable,
            "-m",
            "pytest",
            *map(str, owners),
            f"--rootdir={rootdir}",
            "--import-mode=importlib",
            "-p",
            "no:cacheprovider",
            f"--junit-xml={report}",
            "-o",
            "junit_family=xunit1",
        ]
        # With --json, stdout holds the one JSON document: pytest's output goes to stderr.
        with raising_on_stop_signals(lambda signum: SystemExit(128 + signum)):
            _run_session(command, rootdir, sys.stderr if as_json else None)
        if not as_json:  # pytest's last line may be unfinished (a test killed it)
            click.echo("")
        code, timed_out = _session_outcome(ended, timeout)
        if not report.exists():
            abort(_no_report(code, timed_out))
        copy_failed = None
        if junit_xml is not None:
            try:
                shutil.copyfile(report, junit_xml)
            except OSError as exc:  # the report below still shows; the exit says it was lost
                copy_failed = f"--junit-xml {junit_xml}: cannot write it: {exc.strerror or exc}"
        results = tally(report, rootdir, owners)
    _report(as_json, order, untested, results, code, timed_out=timeout if timed_out else None)
    if copy_failed is not None:
        abort(copy_failed)
    if code != 0 or timed_out or any(r.failed or r.errors for r in results.values()):
        raise SystemExit(exit_codes.FAILED)


_SESSION_BOUND = SESSION_BOUND + 15.0  # what the session allows itself from a stop, with margin


def _run_session(command: list[str], cwd: Path, stdout: TextIO | None) -> None:
    """Run `orchestrator.testrun.session` (which runs pytest) to its end. Stopped (Ctrl+C, or
    SIGTERM or SIGHUP through `raising_on_stop_signals`), it interrupts pytest as Ctrl+C does, so that
    the tests' teardown runs, and kills whatever is left: this waits for it to finish."""
    process = subprocess.Popen(command, cwd=cwd, stdout=stdout)
    try:
        process.wait()
    except KeyboardInterrupt:  # from a terminal, the session had it too; else (kill -INT) not:
        process.send_signal(signal.SIGTERM)  # it takes one that soon after for the same stop
        _wait_or_stop(process)
        raise
    except SystemExit:
        process.send_signal(signal.SIGTERM)
        _wait_or_stop(process)
        raise
    finally:
        if process.poll() is None:  # a second signal during its teardown: a second one to it
            process.send_signal(signal.SIGTERM)
            _wait_or_stop(process)


def _wait_or_stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for the stopped session to end (it keeps its own deadline). Never SIGKILL it: it is
    what stops the tests' leftovers, which would be left to init. Late, a SIGTERM again (its
    second stop: pytest is killed at once, the cleanup still runs); later still, leave it."""
    for again in (True, False):
        try:
            process.wait(_SESSION_BOUND)
            return
        except subprocess.TimeoutExpired:
            if again:
                process.send_signal(signal.SIGTERM)
    click.echo(f"the test session (pid {process.pid}) is still cleaning up: left to it", err=True)


def _session_outcome(ended: Path, timeout: float) -> tuple[int, bool]:
    """pytest's exit code and whether the timeout interrupted it, as the session wrote them;
    says (stderr) how many processes the tests left running, which it killed."""
    try:
        outcome = json.loads(ended.read_text())
    except (OSError, ValueError):
        abort("the test run ended before it could say how (its session process was killed)")
    if outcome["left"]:
        click.echo(f"killed {outcome['left']} process(es) the tests left running", err=True)
    if outcome["timed_out"]:
        click.echo(f"the run took over --timeout {timeout:g}s: pytest was interrupted", err=True)
    return int(outcome["exit"]), bool(outcome["timed_out"])


def _no_report(code: int, timed_out: bool) -> str:
    """Why pytest wrote no report: it did run, and its output above shows how far it got."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (its teardown outlasted the --timeout interruption)" if timed_out else ""
        return (
            f"pytest was killed by {name}{why} before it wrote its report; the test it was"
            " running is the last one shown above"
        )
    return (
        f"pytest exited {code} before it wrote its report (a test called os._exit()?); the"
        " test it was running is the last one shown above"
    )


def _report(
    as_json: bool,
    order: list[str],
    untested: list[str],
    results: dict[str, Tally],
    pytest_exit: int,
    *,
    timed_out: float | None = None,
) -> None:
    if as_json:
        echo_json(as_dict(order, untested, results, pytest_exit, timed_out))
    else:
        click.echo(render(order, untested, results, pytest_exit, timed_out))
