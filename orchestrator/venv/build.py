"""`python -m orchestrator.venv.build`: build one module venv, then exit 0 (built) or 1.

The supervisor starts one such process per build (at most a few at once), with its output
going to the venv's log file, and learns the outcome when its loop reaps it: the supervisor's
loop never waits on an installer. Its standard input is the job, a JSON object (see
`Environments._job`) in a memfd: no file name that two supervisors could both write.

Two builds of one key (two supervisors of one project) may run at once: each builds its own,
and the rename into place is under `.<key>.lock` (flock), where a venv that is usable already
wins (the second build is thrown away) and one that is not is replaced.

The venv is built in `.build-<key>-<pid>/` beside its final place and renamed into place once
complete, with its marker inside: a build that is killed halfway leaves only a `.build-` directory,
which is never taken for a venv and is removed by the next build of that key. Paths that the
venv's own scripts hold (`bin/activate`, console-script shebangs) are rewritten to the final
place before the rename.

Runs in its own process group, with its installer: the supervisor stops a build by killing the
group, and a build whose supervisor dies kills its group itself (parent-death signal).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from module_sdk.process import die_with_parent
from orchestrator.rundir import process_alive
from orchestrator.venv.environments import hide_credentials
from orchestrator.venv.plan import READY_MARKER, venv_ready
from orchestrator.venv.sdk import OVERLAY_DIR, PTH_FILE

_PROBE = (
    "import json, sys, sysconfig; print(json.dumps({'abi': sysconfig.get_config_var('SOABI'), "
    "'purelib': sysconfig.get_paths()['purelib'], 'version': sys.version.split()[0]}))"
)


_UNBLOCK = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class BuildError(Exception):
    """A step failed; the message says which and why."""


def main(argv: list[str]) -> int:
    job: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    signal.signal(signal.SIGTERM, _kill_group)
    # The supervisor spawns with these blocked; they stay blocked across exec until unblocked.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _UNBLOCK)
    die_with_parent(signal.SIGTERM)
    if os.getppid() != job["supervisor"]:
        return 1  # the supervisor died before we could ask to die with it
    cache = Path(job["cache"])
    final = cache / job["key"]
    work = cache / f".build-{job['key']}-{os.getpid()}"
    _remove_abandoned(cache, job["key"])
    try:
        _build(job, work, final)
    except (BuildError, OSError) as exc:  # OSError: a full disk, a directory we may not write
        _say(f"error: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        return 1
    _say(f"built {final}")
    return 0


def _build(job: dict[str, Any], work: Path, final: Path) -> None:
    started = time.monotonic()
    _say(f"creating a venv from {job['base_python']}")
    _run([job["base_python"], "-m", "venv", "--without-pip", str(work)], job, "creating the venv")
    python = work / "bin" / "python"
    probe = _run([str(python), "-c", _PROBE], job, "asking the venv's python", quiet=True)
    found = json.loads(probe.strip().splitlines()[-1])
    if tuple(int(part) for part in found["version"].split(".")[:2]) < (3, 11):
        raise BuildError(f"{job['base_python']} is Python {found['version']}: module_sdk needs 3.11+")
    same_abi = found["abi"] == job["sdk"]["abi"]
    extra = [] if same_abi else list(job["sdk"]["requirements"])
    if job["lines"] or extra:
        _install(job, python, extra)
    _link_sdk(job, work, final, Path(found["purelib"]), same_abi)
    _rewrite_paths(work, final)
    marker = {
        "python": job["base_python"],
        "version": found["version"],
        # Readable by whoever can list the venv: an index URL's credentials are not written.
        "lines": [hide_credentials(line) for line in job["lines"]],
        "seconds": round(time.monotonic() - started, 3),
    }
    fd = os.open(work / READY_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as ready:
        ready.write(json.dumps(marker) + "\n")
    _move_into_place(work, final)


def _install(job: dict[str, Any], python: Path, extra: list[str]) -> None:
    """Install the module's requirements (and the SDK's, for another ABI) in one resolution, so
    that a conflict between them is the installer's clear error, not a broken import later."""
    if job["requirements_file"] is not None:
        files = ["-r", job["requirements_file"]]
    else:
        files = _arguments(job["lines"])
    if job["installer"]:
        command = [job["installer"], "pip", "install", "--python", str(python), *files, *extra]
    elif importlib.util.find_spec("pip") is not None:  # ours installs into the venv (pip 22.3+)
        command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-input"]
        command += [*files, *extra]
    else:  # a supervisor's environment without pip: the venv gets its own
        _run([str(python), "-m", "ensurepip", "--default-pip"], job, "installing pip")
        command = [str(python), "-m", "pip", "install", "--no-input", *files, *extra]
    _say("installing: " + hide_credentials(" ".join(command)))
    _run(command, job, "installing the requirements")


def _arguments(lines: list[str]) -> list[str]:
    """A `requirements:` list as installer arguments, so that relative paths in it resolve in
    the working directory (beside modules.yaml) for pip and uv alike (in a requirements file, uv
    would resolve them beside the file): an option line is split as a shell would split it, a
    requirement line (`name >= 1; python_version < "3.12"`) stays one argument."""
    arguments: list[str] = []
    for line in lines:
        try:
            arguments.extend(shlex.split(line) if line.startswith("-") else [line])
        except ValueError as exc:
            raise BuildError(f"cannot split {line!r}: {exc}") from None
    return arguments


def _link_sdk(job: dict[str, Any], work: Path, final: Path, purelib: Path, same_abi: bool) -> None:
    """module_sdk, and its run-time distributions when they suit this interpreter, as links in
    a directory of the venv's own, named by one `.pth` line (see `orchestrator.venv.sdk`)."""
    overlay = work / OVERLAY_DIR
    overlay.mkdir()
    targets = [job["sdk"]["package"], *(job["sdk"]["links"] if same_abi else [])]
    for target in targets:
        (overlay / Path(target).name).symlink_to(target)
    (purelib / PTH_FILE).write_text(f"{final / OVERLAY_DIR}\n")


def _rewrite_paths(work: Path, final: Path) -> None:
    """The venv's scripts name the directory they were built in: name the final one."""
    old, new = str(work).encode(), str(final).encode()
    for path in (work / "bin").iterdir():
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
            continue
        data = path.read_bytes()
        if old in data:
            path.write_bytes(data.replace(old, new))
    config = work / "pyvenv.cfg"
    config.write_bytes(config.read_bytes().replace(old, new))


def _move_into_place(work: Path, final: Path) -> None:
    """Rename `work` to `final`, under the key's lock: another builder of this key (another
    supervisor's) must not find `final` half moved, nor remove the one just moved."""
    fd = os.open(final.with_name(f".{final.name}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if venv_ready(final):
            shutil.rmtree(work, ignore_errors=True)  # another supervisor of this project built it
            _say(f"{final} was built meanwhile by another build: keeping it")
            return
        if final.exists():
            shutil.rmtree(final)  # not a usable venv (no marker, or no python): nothing runs on it
        os.rename(work, final)
    finally:
        os.close(fd)  # and with it the lock


def _remove_abandoned(cache: Path, key: str) -> None:
    """`.build-<key>-<pid>` directories of builds whose process is gone."""
    for path in cache.glob(f".build-{key}-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isascii() and pid.isdigit() and not process_alive(int(pid)):
            _say(f"removing an abandoned build: {path}")
            shutil.rmtree(path, ignore_errors=True)


def _run(command: list[str], job: dict[str, Any], step: str, *, quiet: bool = False) -> str:
    """Run one step in our process group, its output to our log (or returned, when `quiet`)."""
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if quiet else None,
            stderr=subprocess.STDOUT,
            timeout=job["timeout"],
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{step}: no result after {job['timeout']:g}s") from None
    except OSError as exc:
        raise BuildError(f"{step}: {command[0]}: {exc.strerror or exc}") from None
    output = done.stdout.decode(errors="replace") if quiet and done.stdout else ""
    if done.returncode != 0:
        if output:
            _say(output.rstrip())
        raise BuildError(f"{step} failed (exit {done.returncode})")
    return output


def _say(line: str) -> None:
    print(f"[build] {line}", flush=True)


def _kill_group(signum: int, frame: FrameType | None) -> None:
    """The supervisor is gone: take the installer down with us."""
    os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
