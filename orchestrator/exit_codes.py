"""The CLI's exit codes, in one place (DESIGN.md, "CLI"): the same situation exits the same way
in every command."""

from typing import Final

OK: Final = 0  # done; also `down` when nothing was running
FAILED: Final = 1  # the operation failed, a test failed, or `up` found a supervisor already running
USAGE: Final = 2  # bad usage: an unknown option or command (click uses 2 too), or module name
BAD_CONFIG: Final = 3  # the config directory does not exist, or the config in it is invalid
NOT_RUNNING: Final = 4  # no supervisor is running for that config (and the command needs one)
