"""A warm template process that forks module processes: `python -m module_sdk.forkserver FD`.

Starting a new interpreter and importing ZeroMQ costs tens of milliseconds per module start; a
fork of this process, which has imported everything a module process needs but has created no
ZeroMQ context and no thread, costs about one. The supervisor talks to it over a Unix socket (FD),
on which it first says `{ready: PID}` once it has booted (imported all that): each request is a
msgpack map `{name, cwd}` with two descriptors attached: the write end of the output pipe, and a
memfd holding the module's environment (a msgpack map); the answer is `{pid}` or `{error}` (and
`errno` when the OS refused the fork: EAGAIN, no task slot left, is the host's, not the
template's). The template never reads an environment: only the forked process does, so no
module's variables (secrets among them) stay in the template's memory, which every later fork
(a module running as another user, say) inherits. A request with `standby: true` also attaches
the read end of a "go" pipe: the process forked for it is a standby (module_sdk/standby.py),
which joins the module's cgroups at once and runs the module only when the supervisor says go. A
request `{batch: [{name, cwd}, ...]}` attaches one output pipe per entry, in order, then one
environment per entry, and is answered `{pids: [...], errnos: [...]}` (a pid, or the error for
that entry and its errno): one intermediate forks them all, which is how `up` starts many
modules at once. A request `{main, argv, cwd}` (and its output and environment) runs module
`main` as `python -P -m main ARGV` would: the supervisor's broker, which so costs no interpreter
start-up of its own.

Settings that only a new interpreter reads (PYTHONHASHSEED, PYTHONOPTIMIZE, ...) are the
template's; a module whose `env` sets any PYTHON* variable other than PYTHONPATH is spawned.

Each module process is a grandchild: the template forks an intermediate process, which forks the
module process and exits at once. The orphaned module process is then adopted by the supervisor,
a child subreaper, which alone signals and reaps it, as if it had spawned it itself.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import msgpack

# What every module process needs, imported once here so that forks start warm.
import module_sdk.bus
import module_sdk.channel
import module_sdk.codec
import module_sdk.limits
import module_sdk.loader
import module_sdk.shim
import module_sdk.standby
from module_sdk.process import PR_SET_NAME, prctl
from module_sdk.protocol import FORK_BATCH_MAX, version_mismatch

_MAX_REQUEST = 1 << 20
TEMPLATE_COMM = "forkserver"  # the template's process name, as `ps -e` lists it


def serve(control: socket.socket) -> None:
    """Answer fork requests until the supervisor closes its end."""
    while True:
        try:
            payload, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 2 * FORK_BATCH_MAX)
        except InterruptedError:
            continue
        except ConnectionResetError:  # closed with an answer of ours unread: gone all the same
            return
        if not payload:
            return  # the supervisor is gone
        try:
            request = msgpack.unpackb(payload, raw=False)
            mismatch = version_mismatch(request.get("protocol"))
            if mismatch is not None:
                raise ValueError(mismatch)
            batch = request.get("batch")
            if batch is not None:
                if not isinstance(batch, list) or len(fds) != 2 * len(batch):
                    raise ValueError(f"{len(fds)} descriptors for a batch of {len(batch or ())}")
            elif len(fds) != (3 if request.get("standby") else 2):
                raise ValueError(f"{len(fds)} descriptors for one process")
        except Exception as exc:
            for fd in fds:
                os.close(fd)
            control.send(msgpack.packb({"error": f"bad request: {exc}"}))
            continue
        try:
            intermediate = os.fork()
        except OSError as exc:  # no process slot (a TasksMax), no memory: this request fails
            for fd in fds:
                os.close(fd)
            control.send(msgpack.packb(_failed(exc)))
            continue
        if intermediate == 0:
            if batch is not None:
                _intermediate_batch(control, batch, fds)
            _intermediate(control, request, fds)
        for fd in fds:
            os.close(fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(intermediate, 0)


def _intermediate(control: socket.socket, request: dict[str, Any], fds: list[int]) -> NoReturn:
    """Fork the module process, report its pid, and exit so that it is orphaned to the
    supervisor (never returns). `fds`: its output, its environment, and its "go" pipe if it is
    a standby."""
    go = fds[2] if len(fds) > 2 else None
    _answer(control, lambda: {"pid": _fork(control, request, fds[0], fds[1], go)})


def _intermediate_batch(control: socket.socket, batch: list[Any], fds: list[int]) -> NoReturn:
    """`_intermediate` for each entry of a batch, the answer being every pid (or error), in
    order. Each module process keeps only its own output pipe and environment of the batch's."""
    outputs, environments = fds[: len(batch)], fds[len(batch) :]

    def fork_all() -> dict[str, Any]:
        pids: list[int | str] = []
        errnos: list[int | None] = []  # each failed entry's errno (EAGAIN: no task slot left)
        for index, request in enumerate(batch):
            others = [fd for fd in fds if fd not in (outputs[index], environments[index])]
            try:
                pids.append(
                    _fork(
                        control, request, outputs[index], environments[index], None, others=others
                    )
                )
                errnos.append(None)
            except OSError as exc:
                pids.append(f"fork failed: {exc}")
                errnos.append(exc.errno)
        return {"pids": pids, "errnos": errnos}

    _answer(control, fork_all)


def _answer(control: socket.socket, work: Callable[[], dict[str, Any]]) -> NoReturn:
    """An intermediate's life: send what `work` returns (or the error it raised), and exit."""
    code = 0
    try:
        control.send(msgpack.packb(work()))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            control.send(msgpack.packb(_failed(exc)))
        code = 1
    finally:
        os._exit(code)


def _failed(exc: BaseException) -> dict[str, Any]:
    """The answer for a fork that failed: the error, and the OS's errno if it has one, so that
    the supervisor tells the host's refusal (EAGAIN: no task slot; ENOMEM) from a broken
    template."""
    answer: dict[str, Any] = {"error": f"fork failed: {exc}"}
    if isinstance(exc, OSError) and exc.errno is not None:
        answer["errno"] = exc.errno
    return answer


def _fork(
    control: socket.socket,
    request: dict[str, Any],
    output: int,
    environment: int,
    go: int | None,
    *,
    others: Sequence[int] = (),
) -> int:
    """Fork the process `request` asks for; its pid. The process closes `control` and `others`
    (the descriptors of the other modules of a batch), reads its environment, and never
    returns."""
    pid = os.fork()
    if pid == 0:
        control.close()
        for fd in others:
            os.close(fd)
        if "main" in request:
            _run_main(request, output, environment)
        _become_module(request, output, environment, go)
    with contextlib.suppress(OSError):  # its own group before anyone may signal it
        os.setpgid(pid, pid)
    return pid


def _read_environment(fd: int) -> dict[str, str]:
    """The environment the supervisor wrote to memfd `fd` (closed here): a msgpack map of
    strings."""
    try:
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    finally:
        os.close(fd)
    env = msgpack.unpackb(b"".join(chunks), raw=False)
    if not isinstance(env, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in env.items()
    ):
        raise ValueError("the environment is not a map of strings")
    return env


def _become_module(request: dict[str, Any], output: int, environment: int, go: int | None) -> None:
    """In the new process: own process group, output to the pipe, the module's environment and
    working directory, default signal handling; then run the shim (never returns). A standby
    (`go` given) first joins its cgroups and waits for the supervisor's word."""
    code = 70
    atexit._clear()  # the template's: the module's own run as it stops (module_sdk/shim.py)
    try:
        name = request["name"]
        _own_process(
            f"{module_sdk.standby.COMM_PREFIX if go is not None else 'mod:'}{name}", output
        )
        env = _read_environment(environment)
        if go is not None:  # as little as it can before it waits: a fork's every write is a copy
            declined = module_sdk.standby.wait_for_go(go, env, request.get("ahead"))
            if declined is not None:
                code = declined
                return
            prctl(PR_SET_NAME, f"mod:{name}")
        _set_environ(env)
        os.chdir(request["cwd"])
        _as_if_started_here(request["cwd"])
        module_sdk.limits.apply_from_env()  # rlimits, Landlock, user: before any module code
        sys.argv = ["module_sdk", name]
        code = module_sdk.shim.main(joined=go is not None)
    except SystemExit as exc:  # `sys.exit(0)` at the module's import: its code, as Python's own
        code = module_sdk.shim._exit_code(exc)
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def _run_main(request: dict[str, Any], output: int, environment: int) -> None:
    """In the new process: run module `main` as `python -P -m` would, with `argv`, in its own
    process group, output to the pipe, default signal handling (never returns)."""
    code = 70
    try:
        name = str(request["main"])
        _own_process(name, output)
        _set_environ(_read_environment(environment))
        os.chdir(request["cwd"])
        if _SCRIPT_DIR is not None and sys.path and sys.path[0] == _SCRIPT_DIR:
            del sys.path[0]  # -P: not a package of that name where the template was started
        sys.argv = [name, *request["argv"]]
        runpy.run_module(name, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        _exit(code)


def _own_process(comm: str, output: int) -> None:
    """A forked process made its own: its process group, its name (what ps -o comm and top
    show), its output on the pipe, default signal handling."""
    os.setpgid(0, 0)
    prctl(PR_SET_NAME, comm)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _set_environ(env: dict[str, str]) -> None:
    """Make the process environment `env`, changing only what differs from the template's (most
    of it is the same): every write to a fork's memory copies a page."""
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _exit(code: int) -> NoReturn:
    """Exit a forked process without running what its template registered (atexit)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _as_if_started_here(cwd: str) -> None:
    """What a fresh `python -m module_sdk` would have set up from its environment and directory:
    sys.path starting at the working directory, then PYTHONPATH, and the time zone."""
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    inherited = [p for p in sys.path[1:] if p not in extra]
    sys.path[:] = [cwd, *extra, *inherited]
    time.tzset()


_SCRIPT_DIR: str | None = None  # what `python -m` put first in sys.path: where it started


def main(fd: int | None = None, *, script_dir: str | None = None) -> int:
    """Serve the control socket `fd` (the first argument when run as `python -m`; else a fork
    of the supervisor's, module_sdk/template_fork.py, whose `python -m` entry of sys.path is
    `script_dir`) until the supervisor closes its end."""
    global _SCRIPT_DIR
    if fd is None:
        fd = int(sys.argv[1])
        script_dir = None if sys.flags.safe_path or not sys.path else sys.path[0]
    _SCRIPT_DIR = script_dir
    prctl(PR_SET_NAME, TEMPLATE_COMM)  # (a fork of the supervisor would show as it in `ps`)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the supervisor's to handle
    # What the template holds now is shared with every fork until a fork writes to it, and a
    # collection in a fork writes to every object it visits: leave these out of collections.
    gc.freeze()
    control = socket.socket(fileno=fd)
    try:
        control.send(msgpack.packb({"ready": os.getpid()}))  # booted: its first message
        serve(control)
    except (BrokenPipeError, ConnectionResetError):  # the supervisor gave up on us, or is gone
        pass
    finally:
        control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
