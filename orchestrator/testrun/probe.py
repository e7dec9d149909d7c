"""`python -m orchestrator.testrun.probe NAME PATH`: print a module's `get_tests()` as JSON.

Run in a subprocess because importing a module may have side effects the CLI must not suffer.
Prints `MARK` and the JSON on its last line (the module may print before it), `null` when the
module has no `get_tests()`; exits 1 with a message when it fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from module_sdk.loader import ModuleLoadError, load_module

MARK = "orchestrator-tests: "


def main(argv: list[str]) -> int:
    name, path = argv
    try:
        module = load_module(name, Path(path))
    except ModuleLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except BaseException as exc:  # sys.exit() at import, say: said, not raised
        print(f"importing it raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    get_tests = getattr(module, "get_tests", None)
    if get_tests is None:
        print(f"\n{MARK}null", flush=True)
        return 0
    try:
        tests = get_tests()
    except BaseException as exc:
        print(f"get_tests() raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(tests, list | tuple) or not all(isinstance(t, str) for t in tests):
        print(f"get_tests() must return a list of strings, got {tests!r:.200}", file=sys.stderr)
        return 1
    bad = next((t for t in tests if "\x00" in t), None)
    if bad is not None:  # no file has such a name: resolving it raised in the CLI, a traceback
        print(f"get_tests() lists a path with a NUL byte: {bad!r:.200}", file=sys.stderr)
        return 1
    print(f"\n{MARK}{json.dumps(list(tests))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
