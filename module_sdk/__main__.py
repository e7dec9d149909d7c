"""`python -m module_sdk`: the child process the supervisor starts for each module."""

import logging
import os
import sys
import traceback

from module_sdk.limits import apply_from_env
from module_sdk.protocol import EXIT_LOAD_FAILED
from module_sdk.shim import _exit_code, main

if __name__ == "__main__":
    # As a forked module process ends (module_sdk/forkserver.py `_become_module`): whatever
    # escapes main() (a KeyboardInterrupt or SystemExit from the module's import, say) is shown
    # and the process still ends here. Left to the interpreter, it would wait for the module's
    # non-daemon threads first, and the supervisor would see a start timeout, not the error.
    code = EXIT_LOAD_FAILED
    try:
        apply_from_env()  # rlimits, Landlock, user: before any module code runs
        code = main()
    except SystemExit as exc:  # `sys.exit(0)` at the module's import: its code, as Python's own
        code = _exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            # A module may leave non-daemon threads behind; they must not keep it alive.
            os._exit(code)
