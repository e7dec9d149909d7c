"""`python -m orchestrator.testrun.probe NAME PATH`: print a module's `get_tests()` as JSON.

Run in a subprocess because importing a module may have side effects the CLI must not suffer.
Prints `null` when the module has no `get_tests()`; exits 1 with a message when it fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from module_sdk.loader import ModuleLoadError, load_module


def main(argv: list[str]) -> int:
    name, path = argv
    try:
        module = load_module(name, Path(path))
    except ModuleLoadError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    get_tests = getattr(module, "get_tests", None)
    if get_tests is None:
        print("null")
        return 0
    try:
        tests = get_tests()
    except Exception as exc:
        print(f"get_tests() raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not isinstance(tests, list | tuple) or not all(isinstance(t, str) for t in tests):
        print(f"get_tests() must return a list of strings, got {tests!r}", file=sys.stderr)
        return 1
    print(json.dumps(list(tests)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
