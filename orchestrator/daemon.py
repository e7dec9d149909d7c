"""The supervisor that `orchestrator up -d` starts (`detach`), or `python -m orchestrator.daemon
CONFIG_DIR` (for whoever starts it by hand).

Also what `orchestrator up` runs in the foreground. Errors are one line on stderr and an exit code
from `orchestrator.exit_codes`. Its first act is to start the fork server's template (`Boot`), so
that the template boots while this process imports, reads its config and sets up the supervisor.

`up -d` forks itself (`detach`) rather than starting a second interpreter: the fork has the
config's code imported already (the config itself it reads after forking the fork server's
template, which must never hold its secrets), pays no interpreter start-up, and is smaller than a
supervisor started as an interpreter of its own (a fork counts only the library pages it
touches). What the CLI imported on top (click, the commands) is
unloaded once the fork has left the CLI's frames (`Detached`, `become`).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import time
import traceback
import typing
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from module_sdk.process import PR_SET_NAME, prctl
from orchestrator import exit_codes
from orchestrator.boot import Boot
from orchestrator.regular_file import NotRegularFileError

if TYPE_CHECKING:
    from collections.abc import Callable

    from orchestrator.config import AppConfig
    from orchestrator.rundir import RunDir

log = logging.getLogger(__name__)

PROCESS_NAME = "orchestratord"  # the detached supervisor's name (comm), as `ps -e` lists it


class LaunchError(Exception):
    """The supervisor could not start; `code` is the exit code to use."""

    def __init__(self, message: str, code: int = exit_codes.FAILED) -> None:
        super().__init__(message)
        self.code = code


def run_supervisor(config: AppConfig, run_dir: RunDir, boot: Boot, *, foreground: bool) -> int:
    """Be the supervisor until it is stopped; returns the exit code, raises LaunchError.
    The supervisor owns `boot` from here on."""
    # Imported here, not above, so that `main` starts the template before paying for them.
    from orchestrator.rundir import AlreadyRunningError, UnsafeRunDirError  # noqa: PLC0415

    try:
        run_dir.acquire()
    except AlreadyRunningError as exc:
        raise LaunchError(
            f"a supervisor is already running for {config.config_dir} ({exc.which});"
            " use `orchestrator status` or `orchestrator down`"
        ) from None
    except UnsafeRunDirError as exc:
        raise LaunchError(f"unsafe run directory: {exc}") from None
    except OSError as exc:  # a full or read-only file system, no inode left
        raise LaunchError(
            f"cannot write in the run directory {run_dir.path}: {exc.strerror or exc}"
        ) from None
    # From here on the run directory is ours: whatever stops us before the Supervisor's own
    # teardown runs must release it, or the next `up` takes it for a supervisor that was killed.
    try:
        # The broker boots meanwhile (the supervisor takes it over); then the rest is imported.
        from orchestrator.broker_process import prestart  # noqa: PLC0415

        prestart(config, run_dir, boot)
        from orchestrator.config import Redactor  # noqa: PLC0415
        from orchestrator.logsetup import setup_logging  # noqa: PLC0415
        from orchestrator.supervisor import StartError, Supervisor  # noqa: PLC0415
    except BaseException:
        run_dir.release()
        raise
    redactor = Redactor(config.secrets)
    try:
        setup_logging(config.logging, redactor, console=foreground)
    except OSError as exc:
        run_dir.release()
        detail = f"{exc.strerror or exc}"
        if isinstance(exc, NotRegularFileError):  # app.log is a link, a FIFO, a device
            detail = f"{Path(exc.filename).name} is {detail}"
        raise LaunchError(
            f"{config.main_file.name}: logging.directory: cannot write logs in"
            f" {config.logging.directory}: {detail}",
            exit_codes.BAD_CONFIG,
        ) from None
    except BaseException:
        run_dir.release()
        raise
    from orchestrator.project_lock import ProjectTakenError, lock_project  # noqa: PLC0415

    try:
        # Held until we exit; the supervisor keeps it (`keep`, in its loop).
        project_lock = lock_project(Path(config.logging.directory), run_dir.path)
    except ProjectTakenError as exc:
        run_dir.release()
        raise LaunchError(str(exc)) from None
    try:
        return Supervisor(
            config, run_dir, redactor, boot, foreground=foreground, project_lock=project_lock
        ).run()
    except StartError as exc:  # logged, and everything closed
        raise LaunchError(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl+C before the supervisor's own handler was installed
        run_dir.release()
        raise
    except Exception as exc:
        log.exception("the supervisor stopped on an error")
        run_dir.release()
        raise LaunchError(f"the supervisor stopped on an error: {exc}") from exc
    finally:
        if project_lock is not None:
            project_lock.close()


def main(argv: list[str]) -> int:
    """Load the config in `argv[0]` and supervise it in the background."""
    from orchestrator.cli import standard_streams  # noqa: PLC0415  (imports nothing heavy)

    # Descriptors 0-2 open before Boot's pipes take their numbers (`python -m ... >&-`).
    standard_streams()
    with Boot() as boot:
        from orchestrator.config import ConfigError, load_config  # noqa: PLC0415  (see above)
        from orchestrator.rundir import RunBaseError, RunDir  # noqa: PLC0415

        config_dir = Path(argv[0])
        try:
            config = load_config(config_dir)
            return run_supervisor(config, RunDir(config_dir), boot, foreground=False)
        except ConfigError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exit_codes.BAD_CONFIG
        except RunBaseError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exit_codes.FAILED
        except LaunchError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exc.code


class Daemon:
    """The forked supervisor, from the CLI's side: its pid and, once it has exited, its code."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._code: int | None = None

    def poll(self) -> int | None:
        """Its exit code if it has exited (and is reaped now), else None."""
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: no code to tell
                self._code = exit_codes.FAILED
            else:
                if pid == self.pid:
                    self._code = os.waitstatus_to_exitcode(status)
        return self._code

    def wait(self, timeout: float) -> int | None:
        """`poll` until it has exited or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return code


class Detached(BaseException):
    """Raised in `detach`'s child, when the CLI's `main` is there to catch it, so that the child
    leaves the CLI's frames before it becomes the supervisor (`become`). A BaseException: no
    `except Exception` on the way may take it for an error."""

    def __init__(self, config_dir: Path, run_dir: RunDir, boot: Boot) -> None:
        super().__init__("the detached supervisor, leaving the command that started it")
        self.config_dir = config_dir
        self.run_dir = run_dir
        self.boot = boot


def detach(
    config_dir: Path,
    run_dir: RunDir,
    output: BinaryIO,
    *,
    close: tuple[BinaryIO, ...],
    leave: bool,
) -> Daemon:
    """Fork the supervisor of the config in `config_dir` into a session of its own, its stdout
    and stderr on `output`, stdin /dev/null, and `output` and `close` closed; returns at once, in
    the caller only. The caller must have no threads and no ZeroMQ context yet (neither survives
    a fork), and must not have read the config: the supervisor forks the fork server's template
    first, whose memory every module inherits, and only then reads it (its secrets with it). A
    config that does not load ends it with its one-line error and exit code 3.

    With `leave`, the child raises `Detached` instead of running in the caller's frames: the
    CLI's `main` catches it and calls `become`, so that the supervisor does not keep click and
    the CLI loaded for as long as it runs (1.1 MB of its RSS)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return Daemon(pid)
    try:
        os.setsid()
        prctl(PR_SET_NAME, PROCESS_NAME)  # what `ps` and `top` show: its command line is `up -d`'s
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        for stream in (output, *close):
            stream.close()  # (the caller's own `close()` later does nothing)
        # What `python -P` did for the daemon as a process of its own: a package in the working
        # directory must not shadow one the supervisor imports from here on.
        if not sys.flags.safe_path and sys.path and sys.path[0] in ("", _working_directory()):
            del sys.path[0]
        boot = Boot()  # the template boots meanwhile
    except BaseException as exc:
        _exit(_report(exc))
    if leave:
        raise Detached(config_dir, run_dir, boot)
    become(Detached(config_dir, run_dir, boot))


def become(detached: Detached) -> NoReturn:
    """Be the supervisor `detach` forked, then exit (never back into the CLI's frames)."""
    code = exit_codes.FAILED
    try:
        with detached.boot as boot:
            _forget_cli()
            from orchestrator.config import ConfigError, load_config  # noqa: PLC0415

            try:
                config = load_config(detached.config_dir)
            except ConfigError as exc:
                raise LaunchError(str(exc), exit_codes.BAD_CONFIG) from None
            code = run_supervisor(config, detached.run_dir, boot, foreground=False)
    except BaseException as exc:
        code = _report(exc)
    _exit(code)


def _report(exc: BaseException) -> int:
    """The exit code for `exc`, which stopped a detached supervisor; printed unless it says it."""
    if isinstance(exc, LaunchError):
        print(f"Error: {exc}", file=sys.stderr)
        return exc.code
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else exit_codes.FAILED
    traceback.print_exception(exc)
    return exit_codes.FAILED


def _exit(code: int) -> NoReturn:
    """Run what an exit runs (log files' last writes and compressions, logging's flush), then
    go, without unwinding into whatever called us."""
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _forget_cli() -> None:
    """Unload click and the CLI's commands, which a supervisor forked from `up -d` never uses.
    Their objects are reference cycles (a module's functions hold its namespace), kept alive
    also by typing's caches of click's generic classes and its overloads: cleared, so that one
    collection frees them all."""
    _unload(lambda name: name.partition(".")[0] == "click" or name.startswith("orchestrator.cli."))
    typing.clear_overloads()
    for clear in getattr(typing, "_cleanups", ()):  # typing's own caches (Python 3.11-3.13)
        clear()
    gc.collect()


def _unload(which: Callable[[str], bool]) -> None:
    """Remove the modules named `which` from sys.modules and from their packages."""
    for name in [name for name in sys.modules if which(name)]:
        module = sys.modules.pop(name)
        parent, _, child = name.rpartition(".")
        if getattr(sys.modules.get(parent), child, None) is module:
            delattr(sys.modules[parent], child)


def _working_directory() -> str:
    """The working directory, or "" if it was removed (`up -d` run from a deleted directory)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
