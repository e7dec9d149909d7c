"""The CLI's exit codes, in one place (DESIGN.md, "CLI")."""

from typing import Final

OK: Final = 0
FAILED: Final = 1  # the operation failed, or a test failed
USAGE: Final = 2  # bad usage (click uses 2 as well)
BAD_CONFIG: Final = 3
NOT_RUNNING: Final = 4  # no supervisor is running for that config
