"""`orchestrator test [NAME...]`."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import click

import orchestrator
from orchestrator import exit_codes
from orchestrator.cli.common import App, abort, config_option, echo_json
from orchestrator.testrun.discover import DiscoveryError, discover
from orchestrator.testrun.report import CORE, Tally, as_dict, render, tally


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
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as one JSON document; pytest's own output goes to stderr.",
)
def test(
    app: App, names: tuple[str, ...], junit_xml: Path | None, core: bool, as_json: bool
) -> None:
    """Run the tests each enabled module lists in get_tests(), or only those of NAMES.

    All of them run in one pytest session, whose output is shown as it runs; then a report gives
    per module the tests passed, failed, skipped and in error, and the time taken. Exits 0 when all
    pass, 1 when any fails. A module without get_tests() is listed as "no tests".
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
        report = Path(scratch) / "junit.xml"
        rootdir = config.config_dir.parent
        command = [
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
        with _ended_by_signals():
            code = _run_pytest(command, rootdir, sys.stderr if as_json else None)
        if not report.exists():
            abort(f"pytest did not run (exit {code})")
        copy_failed = None
        if junit_xml is not None:
            try:
                shutil.copyfile(report, junit_xml)
            except OSError as exc:  # the report below still shows; the exit says it was lost
                copy_failed = f"--junit-xml {junit_xml}: cannot write it: {exc.strerror or exc}"
        results = tally(report, rootdir, owners)
    if not as_json:
        click.echo("")
    _report(as_json, order, untested, results, code)
    if copy_failed is not None:
        abort(copy_failed)
    if code != 0 or any(r.failed or r.errors for r in results.values()):
        raise SystemExit(exit_codes.FAILED)


TEARDOWN = 30.0  # seconds a stopped pytest has for its teardown before it is killed


def _run_pytest(command: list[str], cwd: Path, stdout: TextIO | None) -> int:
    """Run pytest to its end; its exit code. Stopped (Ctrl+C, or SIGTERM or SIGHUP through
    `_ended_by_signals`), pytest is interrupted as by Ctrl+C, so that the tests' teardown runs
    (a `RunningModule` stops the supervisor it started), then killed if it takes longer than
    TEARDOWN seconds."""
    # Interruptible whatever we inherited: started with SIGINT ignored (a script's `cmd &`),
    # pytest slept through the SIGINT below and was killed, its teardown never run.
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=stdout,
        preexec_fn=_default_sigint,  # noqa: PLW1509  (the CLI runs no thread of its own)
    )
    try:
        return process.wait()
    except KeyboardInterrupt:  # the terminal sent pytest the Ctrl+C too
        _wait_or_kill(process)
        raise
    except SystemExit:
        process.send_signal(signal.SIGINT)
        _wait_or_kill(process)
        raise
    finally:
        if process.poll() is None:  # a second signal during its teardown
            process.kill()
            process.wait()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(TEARDOWN)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _ended_by_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command as Ctrl+C does (see `_run_pytest`), and the scratch
    directory goes. Before, `timeout` or a CI runner's SIGTERM left pytest running on, its
    parent gone, and its report in /tmp."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _report(
    as_json: bool,
    order: list[str],
    untested: list[str],
    results: dict[str, Tally],
    pytest_exit: int,
) -> None:
    if as_json:
        echo_json(as_dict(order, untested, results, pytest_exit))
    else:
        click.echo(render(order, untested, results, pytest_exit))
