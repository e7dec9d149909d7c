"""The fork server's template as a fork of the supervisor, made as the supervisor starts.

`python -m module_sdk.forkserver FD` costs an interpreter's start-up and the SDK's imports (about
100 ms of CPU on a small VM), on the supervisor's start, while the supervisor itself imports and
loads its config on the same cores. A fork of the supervisor, made before it has a thread or a
ZeroMQ context (the supervisor checks), skips the start-up; `become_template` then leaves what a
new interpreter would not have had, and serves as that one would:

- descriptors: only the control socket, the ones asked to keep, and stdin on /dev/null;
- its own process group; no Python signal handler of the supervisor's;
- imports: the supervisor's own packages and the third-party ones the SDK does not use (click,
  ...) are dropped from `sys.modules`, so that a module imports its own copy from its own
  `sys.path`, as it would in a template started as an interpreter of its own; a package with a
  compiled extension loaded (yaml, psutil) is kept whole (an extension cannot be loaded twice);
- `sys.path` and `__main__` as `python -m module_sdk.forkserver` started here has them.

It never returns into the supervisor's frames: it exits when the supervisor closes its end.
"""

from __future__ import annotations

import contextlib
import locale
import os
import signal
import sys
import traceback
import types
from collections.abc import Collection
from importlib.machinery import EXTENSION_SUFFIXES
from typing import NoReturn

# Top-level names a fresh template has besides the standard library: the SDK, what it imports,
# and the interpreter's own start-up hooks and extension runtimes (`_distutils_hack`, Cython's).
_TEMPLATE_PACKAGES = frozenset({"module_sdk", "zmq", "msgpack", "cython_runtime", "__main__"})


def become_template(control: int, keep: Collection[int]) -> NoReturn:
    """In the child of the supervisor's fork: be the fork server's template, serving `control`
    (a socket's descriptor) and keeping the descriptors `keep` (the lifeline) open; exit when
    the supervisor closes its end."""
    code = 70
    try:
        os.setpgid(0, 0)
        _only_descriptors({control, *keep})
        _default_signal_handlers()
        _forget_foreign_imports()
        script_dir = _as_if_run_with_m()
        _fresh_interpreter_state()
        from module_sdk import forkserver  # noqa: PLC0415  (the supervisor never imports it)

        sys.modules["__main__"] = _main_of(forkserver)
        code = forkserver.main(control, script_dir=script_dir)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _only_descriptors(keep: set[int]) -> None:
    """Close every descriptor above 2 but `keep`; stdin on /dev/null (as the spawned template's
    `stdin=DEVNULL`); stdout and stderr stay the supervisor's. The open ones are listed, not
    every number up to the limit: the supervisor raised it to the hard limit (up to 2^30), and
    without close_range(2) (kernels before 5.9) each number would be a system call."""
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd")):
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own, closed by now
                os.close(fd)


def _fresh_interpreter_state() -> None:
    """What the supervisor's Python set up that a new interpreter would not have: a trace or
    profile function (a coverage run), the CLI's `backslashreplace` on stdout (a module printing
    what its encoding cannot show must do what it would in a new interpreter)."""
    sys.settrace(None)
    sys.setprofile(None)
    stdout = sys.stdout
    if stdout is not None and hasattr(stdout, "reconfigure"):
        with contextlib.suppress(Exception):
            stdout.reconfigure(errors=_new_interpreters_stdout_errors())


def _new_interpreters_stdout_errors() -> str:
    """The error handler a new interpreter gives stdout here (CPython's
    config_get_stdio_errors): PYTHONIOENCODING's, else `surrogateescape` in UTF-8 mode and in
    the C and POSIX locales and those Python coerces them to, else `strict`."""
    _, _, errors = os.environ.get("PYTHONIOENCODING", "").partition(":")
    if errors:
        return errors
    if sys.flags.utf8_mode:
        return "surrogateescape"
    current = locale.setlocale(locale.LC_CTYPE)  # (a query: it changes nothing)
    if current in ("C", "POSIX", "C.UTF-8", "C.utf8", "UTF-8"):
        return "surrogateescape"
    return "strict"


def _main_of(forkserver: types.ModuleType) -> types.ModuleType:
    """A `__main__` as `python -m module_sdk.forkserver` has it (what multiprocessing's spawn
    re-imports in a child): named `__main__`, with the fork server's spec and file."""
    main = types.ModuleType("__main__")
    main.__spec__ = forkserver.__spec__
    main.__file__ = forkserver.__file__
    main.__loader__ = forkserver.__loader__
    main.__package__ = forkserver.__package__
    return main


def _default_signal_handlers() -> None:
    """No handler of the supervisor's Python code runs here: each is back to the default (what
    was ignored, as an interpreter inherits it, stays ignored); nothing blocked."""
    for number in signal.valid_signals():
        if callable(signal.getsignal(number)):
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _forget_foreign_imports() -> None:
    """Drop from `sys.modules` what the supervisor imported that a fresh template would not have
    (the standard library stays: it is the same one). A package with a compiled extension
    loaded (yaml's libyaml binding, psutil) stays whole: an extension cannot be loaded twice in
    one process, so a second import of its package would pair the old extension with new
    Python classes (yaml.CSafeLoader then failed on every document). A module gets that copy of
    it, as it gets the SDK's ZeroMQ and msgpack, whatever its own sys.path holds."""
    stdlib = sys.stdlib_module_names
    compiled = {name.partition(".")[0] for name, module in sys.modules.items() if _compiled(module)}
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if top in stdlib or top in _TEMPLATE_PACKAGES or top in compiled or top.startswith("_"):
            continue
        del sys.modules[name]


def _compiled(module: object) -> bool:
    """Whether `module` is a compiled extension (a .so), not Python source."""
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None) or ""
    return isinstance(origin, str) and origin.endswith(tuple(EXTENSION_SUFFIXES))


def _as_if_run_with_m() -> str | None:
    """Make `sys.path` what `python -m module_sdk.forkserver` started in the working directory
    has: that directory first (unless Python runs with -P), then the interpreter's entries
    without the supervisor's own script directory. Returns that first entry (or None)."""
    entries = list(sys.path)
    try:
        here = os.getcwd()
    except FileNotFoundError:  # started from a directory removed since
        here = ""
    if not sys.flags.safe_path and entries:
        script = sys.argv[0] if sys.argv else ""
        # (Python puts the directory of the script's real path there: a linked command's
        # target, pipx's say, not the link's)
        scripts = {
            os.path.dirname(os.path.realpath(script)),
            os.path.dirname(os.path.abspath(script)),
        }
        if entries[0] in {"", here} or (script and entries[0] in scripts):
            del entries[0]
    if sys.flags.safe_path:
        sys.path[:] = entries
        return None
    sys.path[:] = [here, *entries]
    return here
