"""The loop's side of module venvs: which module runs on which interpreter, and the builds.

`prepare(spec)` is asked whenever a module would start (the start's gate): it answers at once,
from the cache on disk and the builds under way, and queues a build when the venv is missing. A
build is a process of its own (`orchestrator.venv.build`), at most `MAX_BUILDS` at once, whose
exit the loop's reaper hands back here; then every waiting module is offered its start again
(`on_change`). A failed build is remembered (not retried) until the module's requirements change
or an operator restarts the module (`forget_failure`). A build that no module needs any more (its
modules' requirements changed, or they were removed or stopped: `forget`) is cancelled: killed,
or taken off the queue, so that it holds no build slot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.config import ModuleSpec
from orchestrator.regular_file import open_regular
from orchestrator.states import ExitStatus
from orchestrator.venv.plan import CACHE_DIR, Plan, PlanError, plan_for
from orchestrator.venv.sdk import sdk_parts

log = logging.getLogger(__name__)

MAX_BUILDS = 2  # builds at once: each is an installer resolving and unpacking, on 2 cores
BUILD_TIMEOUT = 900.0  # seconds one step of a build (an install) may take
ERROR_LINES = 20  # the installer's last lines kept for status
_TAIL_BYTES = 64 * 1024
_BLOCK_WHILE_SPAWNING = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_USERINFO = re.compile(r"://[^/@\s]+@")
INSTALL_FAILED = "dependencies did not install"  # how the why of such a failure starts

WatchExit = Callable[[int, Callable[[int], None] | None], None]


class Prepared(NamedTuple):
    """The answer to a start: run on `python` (None: the supervisor's interpreter), or wait
    (`waiting` says why), or give up (`failed` says why)."""

    python: Path | None = None
    waiting: str | None = None
    failed: str | None = None


@dataclass
class _Build:
    plan: Plan
    modules: set[str] = field(default_factory=set)
    popen: subprocess.Popen[bytes] | None = None  # None: queued
    error: list[str] = field(default_factory=list)  # the log's last lines, once failed
    why: str = ""
    cancelled: bool = False  # killed: no module needed it any more


class Environments:
    """Every module's venv, as far as the supervisor's loop needs to know."""

    def __init__(
        self,
        project_dir: Path,
        modules_file: Path,
        watch_exit: WatchExit,
        on_change: Callable[[], None],
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.cache = project_dir / CACHE_DIR
        self._scrub = scrub  # hides the config's secrets in what the installer said
        self.modules_file = modules_file
        self._watch_exit = watch_exit
        self._on_change = on_change
        self._builds: dict[str, _Build] = {}  # by key: queued, running or failed
        self._plans: dict[str, Plan] = {}  # by module: the latest plan asked for
        self._memo: dict[str, tuple[ModuleSpec, tuple[object, object], Plan]] = {}
        self._unplanned: dict[str, str] = {}  # by module: why its requirements cannot be read

    def prepare(self, spec: ModuleSpec) -> Prepared:
        """Whether `spec` may start now, and on which interpreter; queues its build if needed."""
        if not spec.own_environment:
            self.forget(spec.name)
            self._plans.pop(spec.name, None)
            return Prepared()
        try:
            plan = self._plan(spec)
        except Exception as exc:  # noqa: BLE001  (whatever a module's files cause, it alone fails)
            if not isinstance(exc, PlanError):
                # A bug here, not the module's fault: where it is goes to app.log, and still
                # only this module fails, never the supervisor (it runs on its loop).
                log.error("%s: planning its venv failed", spec.name, exc_info=True)
            self.forget(spec.name)
            self._plans.pop(spec.name, None)
            why = exc if isinstance(exc, PlanError) else f"{type(exc).__name__}: {exc}"
            self._unplanned[spec.name] = self._scrub(f"{INSTALL_FAILED}: {why}")
            return Prepared(failed=self._unplanned[spec.name])
        self._unplanned.pop(spec.name, None)
        previous = self._plans.get(spec.name)
        if previous is not None and previous.key != plan.key:
            self.forget(spec.name)  # its old build, if no other module needs it, is cancelled
        self._plans[spec.name] = plan
        build = self._builds.get(plan.key)
        if build is None:
            if plan.ready():
                return Prepared(python=plan.python)
            build = self._builds[plan.key] = _Build(plan, {spec.name})
            log.info("%s: installing dependencies (%s) into %s", spec.name, plan.source, plan.venv)
            self._start_builds()
        build.modules.add(spec.name)
        if build.why:
            return Prepared(failed=build.why)
        if build.popen is None:
            running = sum(1 for b in self._builds.values() if b.popen is not None and not b.why)
            return Prepared(waiting=f"installing dependencies: queued ({running} builds running)")
        return Prepared(waiting=f"installing dependencies ({plan.source})")

    def forget(self, name: str) -> None:
        """Module `name` waits for no venv any more (removed, stopped, or its requirements
        changed): a build that no other module needs is cancelled, its slot freed at once (its
        next start asks for the venv again)."""
        build = self._build_of(name)
        if build is None or name not in build.modules:
            return
        build.modules.discard(name)
        if build.modules:
            return
        del self._builds[build.plan.key]
        if build.popen is not None and build.popen.returncode is None:
            log.info(
                "venv build %s cancelled (pid %d): no module needs it any more",
                build.plan.key,
                build.popen.pid,
            )
            build.cancelled = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(build.popen.pid, signal.SIGKILL)  # the builder, its installer
            self._start_builds()  # the loop reaps it: `_finished`

    def forget_failure(self, spec: ModuleSpec) -> None:
        """An operator's restart: the next start builds again."""
        plan = self._plans.get(spec.name)
        build = self._builds.get(plan.key) if plan is not None else None
        if build is not None and build.why:
            del self._builds[build.plan.key]

    def preparing(self, spec: ModuleSpec) -> bool:
        """Whether `spec`'s venv is queued or being built."""
        build = self._build_of(spec.name)
        return build is not None and not build.why

    def launch_env(self, spec: ModuleSpec, path: str) -> tuple[Path | None, dict[str, str]]:
        """The interpreter `spec` starts on (None: the supervisor's) and what its environment
        (whose PATH is `path`) gains: the venv active, as a shell would have it."""
        plan = self._plans.get(spec.name)
        if plan is None or not spec.own_environment:
            return None, {}
        path = f"{plan.venv / 'bin'}{os.pathsep}{path}" if path else str(plan.venv / "bin")
        return plan.python, {"VIRTUAL_ENV": str(plan.venv), "PATH": path}

    def status(self, spec: ModuleSpec) -> dict[str, Any]:
        """What `status` shows in a module's row: its interpreter and its dependencies' state
        (None: it has none of its own; `ready`, `queued`, `installing`, `failed`)."""
        plan = self._plans.get(spec.name)
        if spec.own_environment and spec.name in self._unplanned:
            return {"interpreter": None, "dependencies": "failed"}
        if plan is None or not spec.own_environment:
            return {"interpreter": sys.executable, "dependencies": None}
        build = self._builds.get(plan.key)
        state: str | None = "ready" if build is not None or plan.ready() else None
        if build is not None:
            state = "failed" if build.why else "installing" if build.popen else "queued"
        row: dict[str, Any] = {"interpreter": str(plan.python), "dependencies": state}
        if state == "failed":  # where to look: the module's own log has nothing of the install
            row["install_log"] = str(plan.log)
        return row

    def details(self, spec: ModuleSpec) -> dict[str, Any]:
        """What `status NAME` adds: the venv, what it was built from, the installer's error."""
        plan = self._plans.get(spec.name)
        if plan is None or not spec.own_environment:
            unplanned = self._unplanned.get(spec.name) if spec.own_environment else None
            return {
                "venv": None,
                "venv_python": None,
                "requirements": None,
                "install_log": None,
                "install_error": [unplanned] if unplanned else [],
            }
        build = self._builds.get(plan.key)
        return {
            "venv": str(plan.venv),
            "venv_python": str(plan.base_python),
            "requirements": plan.source,
            "install_log": str(plan.log),
            "install_error": list(build.error) if build is not None else [],
        }

    def close(self) -> None:
        """Stop the builds under way (their half venvs are never taken for complete)."""
        for build in self._builds.values():
            if build.popen is not None and build.popen.returncode is None:
                self._watch_exit(build.popen.pid, None)  # the final sweep reaps it
                try:
                    os.killpg(build.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                build.popen.returncode = -signal.SIGKILL

    # -- builds ----------------------------------------------------------------------------------

    def _plan(self, spec: ModuleSpec) -> Plan:
        """`plan_for(spec)`, read and hashed again only when the spec, its requirements file or
        its interpreter changed (two stats, not a read and a hash, on each start); for a module
        that runs as another user, at each start: the files it includes are checked again."""
        stamp = (_stamp(spec.requirements_file), _stamp(spec.python or Path(sys.executable)))
        memo = self._memo.get(spec.name)
        if memo is not None and memo[0] == spec and memo[1] == stamp and spec.limits.user is None:
            return memo[2]
        plan = plan_for(spec, self.modules_file, self.cache, sdk_parts())
        self._memo[spec.name] = (spec, stamp, plan)
        return plan

    def _build_of(self, name: str) -> _Build | None:
        plan = self._plans.get(name)
        return self._builds.get(plan.key) if plan is not None else None

    def _start_builds(self) -> None:
        running = sum(1 for b in self._builds.values() if b.popen is not None and not b.why)
        for build in self._builds.values():
            if running >= MAX_BUILDS:
                return
            if build.popen is None and not build.why:
                self._spawn(build)
                running += 1

    def _spawn(self, build: _Build) -> None:
        plan = build.plan
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            # The job is the builder's stdin, in a memfd: not on the command line (ps shows
            # that), and not a file that another supervisor of this project could also write.
            job = os.fdopen(os.memfd_create("orchestrator-build-job", os.MFD_CLOEXEC), "w+b")
            # Never through a link, never blocking on a FIFO: whoever owns the project may have
            # put one there, and the supervisor (root, for a module's `user:`) writes the log.
            written = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            with job, os.fdopen(open_regular(plan.log, written), "wb") as output:
                job.write(self._job(plan).encode())
                job.seek(0)
                build.popen = _popen(job, output, plan.cwd)
        except OSError as exc:
            self._failed(build, [f"cannot start the build: {exc}"])
            return
        pid = build.popen.pid
        self._watch_exit(pid, lambda raw: self._finished(build, raw))
        log.info("building venv %s (pid %d, log %s)", plan.key, pid, plan.log)

    def _job(self, plan: Plan) -> str:
        import shutil  # noqa: PLC0415  (here: with bz2 and lzma, 0.6 MB only builds need)

        sdk = sdk_parts()
        return json.dumps(
            {
                "key": plan.key,
                "base_python": str(plan.base_python),
                "lines": list(plan.lines),
                "requirements_file": str(plan.requirements_file) if plan.requirements_file else None,
                "cache": str(self.cache),
                "installer": shutil.which("uv"),
                "supervisor": os.getpid(),
                "timeout": BUILD_TIMEOUT,
                "sdk": {
                    "package": str(sdk.package),
                    "links": [str(link) for link in sdk.links],
                    "requirements": list(sdk.requirements),
                    "abi": sdk.abi,
                },
            }
        )

    def _finished(self, build: _Build, raw: int) -> None:
        code = os.waitstatus_to_exitcode(raw)
        if build.popen is not None:
            build.popen.returncode = code
            # Whatever it started (the installer, `python -m venv`) goes with it: a builder that
            # was killed left them running, later blamed on a module that exited.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(build.popen.pid, signal.SIGKILL)
        if build.cancelled:  # not a failure of any module: none needs it
            status = ExitStatus.from_wait_status(raw).describe()
            log.debug("cancelled venv build %s ended (%s)", build.plan.key, status)
            return
        if code == 0 and build.plan.ready():
            log.info("venv %s ready for %s", build.plan.key, ", ".join(sorted(build.modules)))
            del self._builds[build.plan.key]
        elif code == 0:  # its last line says it built: that is not what went wrong
            unusable = f"built, but {build.plan.venv} is still not usable (no marker or python)"
            self._failed(build, [*_tail(build.plan.log, ERROR_LINES - 1), unusable])
        elif code < 0:  # its last lines say what it was doing, not why it stopped
            killed = f"the build was killed ({ExitStatus(signal=-code).describe()})"
            self._failed(build, [*_tail(build.plan.log, ERROR_LINES - 1), killed])
        else:
            self._failed(build, _tail(build.plan.log, ERROR_LINES) or [f"the build exited {code}"])
        self._start_builds()
        self._on_change()

    def _failed(self, build: _Build, lines: list[str]) -> None:
        lines = [self._scrub(hide_credentials(line)) for line in lines]
        build.error = lines
        build.why = f"{INSTALL_FAILED} ({build.plan.source}): {_cause(lines)}"
        log.error(
            "%s: %s; the installer's last lines: %s",
            ", ".join(sorted(build.modules)),
            build.why,
            " | ".join(lines),
        )


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or written (None: no file, or none to be read)."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_ino, found.st_size, found.st_mtime_ns)


def _popen(job: Any, output: Any, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCK_WHILE_SPAWNING)
    try:
        return subprocess.Popen(
            [sys.executable, "-P", "-m", "orchestrator.venv.build"],
            stdin=job,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            process_group=0,
            close_fds=True,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _tail(path: Path, count: int) -> list[str]:
    """The last `count` non-blank lines of `path` (its last 64 KiB), each cut to 300 characters."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - _TAIL_BYTES))
            data = file.read()
    except OSError:
        return []
    lines = [line.strip()[:300] for line in data.decode(errors="replace").splitlines()]
    return [line for line in lines if line][-count:]


def hide_credentials(text: str) -> str:
    """`https://user:token@host/...` as `https://***@host/...`."""
    return _USERINFO.sub("://***@", text)


def _cause(lines: list[str]) -> str:
    """The installer's own last error, with the lines that explain it (uv says `error: No
    solution found` and then why), else the last line; at most 400 characters."""
    own = [line for line in lines if not line.startswith("[build]")]
    starts = [i for i, line in enumerate(own) if line.startswith(("ERROR", "error:", "×"))]
    if starts:
        cause = " ".join(own[starts[-1] :])
    else:
        cause = lines[-1] if lines else "unknown error"
    return cause if len(cause) <= 400 else cause[:399] + "…"
