"""`python -m module_sdk`: the child process the supervisor starts for each module."""

import logging
import os
import sys

from module_sdk.limits import apply_from_env
from module_sdk.shim import main

if __name__ == "__main__":
    apply_from_env()  # rlimits, Landlock, user: before any module code runs
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # A module may leave non-daemon threads behind; they must not keep a stopped module alive.
    os._exit(code)
