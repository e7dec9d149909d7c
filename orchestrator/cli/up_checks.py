"""What `up` says before it starts anything: the config's error, and that the previous
supervisor of this config died without `down`.

`up -d` has both said by a fork of itself (`check_in_a_fork`), which exits once it has: the
command forks its supervisor next, the supervisor forks the fork server's template, and every
module inherits that template's memory. Neither the config's secrets nor the dead supervisor's
unredacted output may be in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import click

from orchestrator import exit_codes
from orchestrator.cli.common import App, abort
from orchestrator.config import AppConfig
from orchestrator.config.errors import one_line
from orchestrator.rundir import UnsafeRunDirError, open_run_file

_LAST_WORDS_READ = 4096  # bytes of a dead supervisor's own output read for its last line
_LAST_WORDS_SHOWN = 300  # characters of that line shown


def check_in_a_fork(app: App, measure: Callable[[AppConfig], float]) -> float:
    """Load the config and warn of a previous supervisor's death in a child process, which
    prints what it finds and returns what `measure` makes of the config (how long `up -d` is
    to wait for it: so this process need not read it again); exits 3 if the config does not
    load (its one-line error said)."""
    for stream in (sys.stdout, sys.stderr):  # what is buffered would be written twice
        stream.flush()  # (never None in the CLI: cli.standard_streams)
    # A Ctrl+C as it forks would interrupt the child's at-fork hooks (a traceback, and a check
    # going on after the command is gone): blocked across the fork, then the default there.
    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    answer, told = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:
            os.close(answer)
            for number in stops:
                signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _check(app, measure, told)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(told)
    with os.fdopen(answer, "rb") as reading:
        said = reading.read(64)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == exit_codes.BAD_CONFIG:
        raise SystemExit(code)  # (said by the child)
    try:
        if code == exit_codes.OK:
            return float(said)
    except ValueError:
        pass
    abort(f"the config could not be checked (its check exited {code})")


def _check(app: App, measure: Callable[[AppConfig], float], told: int) -> NoReturn:
    """The child's part (never returns into the command's frames)."""
    code = exit_codes.FAILED
    try:
        config = app.load()  # says a config error and exits 3
        report_previous(app, config)
        os.write(told, repr(measure(config)).encode())
        code = exit_codes.OK
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else exit_codes.FAILED
    except KeyboardInterrupt:
        code = 128 + 2
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def report_previous(app: App, config: AppConfig) -> None:
    """Warn (stderr) if the previous supervisor of this config died without `down`: what it
    left in the run directory says so, and its logs' last writes say when."""
    stale = app.run_dir.stale_pid()
    if stale is None:
        return
    pid, started = stale
    logs = config.logging.directory
    last = started
    with contextlib.suppress(OSError):
        # Its modules' processes wrote their last line as it died (module_sdk/shim.py).
        last = max([last, *(f.stat().st_mtime for f in logs.glob("*.log"))])
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last))
    words = _last_words(app.run_dir.daemon_output)
    why = f"; its last output: {words}" if words else " (killed, or out of memory?)"
    click.echo(
        f"warning: the previous supervisor (pid {pid}) stopped without `orchestrator down`"
        f"{why}, last seen at {when}; see {logs / 'app.log'}",
        err=True,
    )


def _last_words(path: Path) -> str:
    """The last line a detached supervisor wrote to its own stdout or stderr (where a library
    that aborts the process says why: libzmq's "Too many open files (...)"), cut to one line."""
    try:
        with os.fdopen(open_run_file(path, os.O_RDONLY), "rb") as output:
            size = os.fstat(output.fileno()).st_size
            output.seek(max(0, size - _LAST_WORDS_READ))
            tail = output.read(_LAST_WORDS_READ).decode(errors="replace")
    except (OSError, UnsafeRunDirError):
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return one_line(lines[-1], _LAST_WORDS_SHOWN) if lines else ""
