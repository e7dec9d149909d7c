"""`python -m orchestrator.daemon CONFIG_DIR`: the supervisor that `orchestrator up -d` starts.

Also what `orchestrator up` runs in the foreground. It imports no CLI code (click and the other
commands would only cost the long-lived supervisor memory): errors are one line on stderr and an
exit code from `orchestrator.exit_codes`. Its first act is to start the fork server's template
(`Boot`), so that the template's interpreter boots while this one loads the config.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import exit_codes
from orchestrator.boot import Boot

if TYPE_CHECKING:
    from orchestrator.config import AppConfig
    from orchestrator.rundir import RunDir

log = logging.getLogger(__name__)


class LaunchError(Exception):
    """The supervisor could not start; `code` is the exit code to use."""

    def __init__(self, message: str, code: int = exit_codes.FAILED) -> None:
        super().__init__(message)
        self.code = code


def run_supervisor(config: AppConfig, run_dir: RunDir, boot: Boot, *, foreground: bool) -> int:
    """Be the supervisor until it is stopped; returns the exit code, raises LaunchError.
    The supervisor owns `boot` from here on."""
    # Imported here, not above, so that `main` starts the template before paying for them.
    from orchestrator.config import Redactor  # noqa: PLC0415
    from orchestrator.logsetup import setup_logging  # noqa: PLC0415
    from orchestrator.rundir import AlreadyRunningError, UnsafeRunDirError  # noqa: PLC0415
    from orchestrator.supervisor import StartError, Supervisor  # noqa: PLC0415

    try:
        run_dir.acquire()
    except AlreadyRunningError as exc:
        raise LaunchError(f"{exc}; use `orchestrator status` or `orchestrator down`") from None
    except UnsafeRunDirError as exc:
        raise LaunchError(f"unsafe run directory: {exc}") from None
    # From here on the run directory is ours: whatever stops us before the Supervisor's own
    # teardown runs must release it, or the next `up` takes it for a supervisor that was killed.
    redactor = Redactor(config.secrets)
    try:
        setup_logging(config.logging, redactor, console=foreground)
    except OSError as exc:
        run_dir.release()
        raise LaunchError(
            f"{config.main_file.name}: logging.directory: cannot write logs in"
            f" {config.logging.directory}: {exc.strerror or exc}",
            exit_codes.BAD_CONFIG,
        ) from None
    except BaseException:
        run_dir.release()
        raise
    try:
        return Supervisor(config, run_dir, redactor, boot, foreground=foreground).run()
    except StartError as exc:  # logged, and everything closed
        raise LaunchError(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl+C before the supervisor's own handler was installed
        run_dir.release()
        raise
    except Exception as exc:
        log.exception("the supervisor stopped on an error")
        run_dir.release()
        raise LaunchError(f"the supervisor stopped on an error: {exc}") from exc


def main(argv: list[str]) -> int:
    """Load the config in `argv[0]` and supervise it in the background."""
    with Boot() as boot:
        from orchestrator.config import ConfigError, load_config  # noqa: PLC0415  (see above)
        from orchestrator.rundir import RunDir  # noqa: PLC0415

        config_dir = Path(argv[0])
        try:
            config = load_config(config_dir)
            return run_supervisor(config, RunDir(config_dir), boot, foreground=False)
        except ConfigError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exit_codes.BAD_CONFIG
        except LaunchError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return exc.code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
