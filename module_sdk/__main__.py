"""`python -m module_sdk`: the child process the supervisor starts for each module."""

import logging
import os
import sys

from module_sdk.shim import main

if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # A module may leave non-daemon threads behind; they must not keep a stopped module alive.
    os._exit(code)
