"""The `orchestrator` command: thin click commands that parse, call the supervisor, and render.

This package imports nothing at all: `orchestrator --version` answers without click, and a
command imports its own module (and what that needs) only when it runs (`group.py`).
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys

from orchestrator import __version__

TYPE_CHECKING = False  # as typing's: typing itself (15-20 ms) waits for a command that needs it
if TYPE_CHECKING:
    from typing import Any

    from orchestrator.daemon import Detached


def main() -> None:
    """Entry point of the `orchestrator` script."""
    standard_streams()
    if sys.argv[1:] == ["--version"]:  # as click's version option prints it, without click
        print(f"orchestrator, version {__version__}")
        return
    # A command's objects die with its process: the interpreter's own collections at exit,
    # which walk every object the imports made, would only add 20-40 ms to each command.
    atexit.register(gc.freeze)  # registered first, so it runs last
    global _catches_detached
    _catches_detached = True
    try:
        detached = _run()
    except KeyboardInterrupt:  # Ctrl+C before click's own handling (its imports): no traceback
        sys.exit(130)
    except OSError as exc:  # stdout or stderr unwritable (a full disk, /dev/full, EIO)
        if exc.errno not in _OUTPUT_ERRORS:
            raise
        try:  # (if stderr is the one that fails, the exit code says it)
            os.write(2, f"Error: cannot write the output: {exc.strerror or exc}\n".encode())
        finally:
            os._exit(1)  # flushing the same streams at exit would fail again, with a traceback
    if detached is not None:  # the child `up -d` forked, out of every command's frames
        from orchestrator.daemon import become  # noqa: PLC0415

        become(detached)


def _run() -> Detached | None:
    """Run the command; in the supervisor `up -d` forks, return what it raised to leave the
    CLI's frames (see `orchestrator.daemon.detach`), none of them left to keep click alive."""
    from orchestrator.cli.group import cli  # noqa: PLC0415

    try:
        cli()
    except BaseException as exc:
        if "orchestrator.daemon" not in sys.modules:  # not imported by the command: not raised
            raise
        from orchestrator.daemon import Detached  # noqa: PLC0415

        if not isinstance(exc, Detached):
            raise
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        return exc
    return None


def catches_detached() -> bool:
    """Whether `main` runs the command, to catch `orchestrator.daemon.Detached` (not under
    click's test runner, say, whose frames the forked supervisor must never return into)."""
    return _catches_detached


_catches_detached = False


_OUTPUT_ERRORS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG)


def standard_streams() -> None:
    """Descriptors 0, 1 and 2 open (on /dev/null where closed), and text the terminal's encoding
    cannot show escaped. A command started with one closed (`up -d 0<&-`) would otherwise hand
    that number to the first file it opens: the supervisor's lifeline pipe became stdin, a
    helper's /dev/null replaced it, and the broker, seeing its lifeline end, never stayed up."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd and getattr(sys, _STREAMS[fd]) is None:  # Python found it closed at start
                setattr(sys, _STREAMS[fd], open(fd, "w", closefd=False))  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")  # a latin-1 or ASCII terminal


_STREAMS = {1: "stdout", 2: "stderr"}


def __getattr__(name: str) -> Any:
    """`from orchestrator.cli import cli`: the click group, imported on first use."""
    if name == "cli":
        from orchestrator.cli.group import cli  # noqa: PLC0415

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
