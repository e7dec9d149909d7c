"""Asking each module for its tests, each in its own subprocess, all at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestrator.config import ModuleSpec
from orchestrator.testrun.probe import MARK

_PROBE_TIMEOUT = 60.0
_OUTPUT_KEPT = 1024 * 1024  # bytes of a probe's output read back


class DiscoveryError(Exception):
    """A module's tests could not be listed, or list a path that does not exist."""


@dataclass(frozen=True)
class ModuleTests:
    """What one module asked to be run: `paths` is None when it has no `get_tests()`."""

    name: str
    directory: Path
    paths: tuple[Path, ...] | None


def module_directory(spec: ModuleSpec) -> Path:
    """Where a module's relative test paths start: the package directory, or the file's folder."""
    return spec.path if spec.path.is_dir() else spec.path.parent


_Probe = tuple[ModuleSpec, "subprocess.Popen[bytes]", IO[bytes], IO[bytes]]  # its output files


def discover(specs: list[ModuleSpec]) -> list[ModuleTests]:
    """Run `get_tests()` of every module in parallel subprocesses; raise DiscoveryError naming the
    first module that fails or lists a missing path."""
    probes: list[_Probe] = []
    for spec in specs:
        # Files, not pipes: a process the module starts at import inherits them, and reading
        # a pipe to its end would wait for that process too.
        out_file = tempfile.TemporaryFile()  # noqa: SIM115  (closed below, once all are read)
        err_file = tempfile.TemporaryFile()  # noqa: SIM115
        probe = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.testrun.probe", spec.name, str(spec.path)],
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            cwd=module_directory(spec),
            start_new_session=True,  # what the module starts at import is killed with it
        )
        probes.append((spec, probe, out_file, err_file))
    try:
        return _collect(probes)
    finally:  # Ctrl+C included: in sessions of their own, the terminal's signal missed them
        for _, started, output, errors in probes:
            _kill_group(started)
            output.close()
            errors.close()


def _collect(probes: list[_Probe]) -> list[ModuleTests]:
    found: list[ModuleTests] = []
    errors: list[str] = []
    for spec, probe, out_file, err_file in probes:
        try:
            probe.wait(timeout=_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            errors.append(
                f"{spec.name}: listing its tests (importing it, get_tests()) took over"
                f" {_PROBE_TIMEOUT:g}s"
            )
            continue
        finally:
            _kill_group(probe)  # whatever it started goes with it
        out, err = _text(out_file), _text(err_file)
        if probe.returncode != 0:
            message = err.strip().splitlines()[-1] if err.strip() else f"exit {probe.returncode}"
            errors.append(f"{spec.name}: cannot list its tests: {message}")
            continue
        listed = _listed(out)
        if not isinstance(listed, list | None):
            errors.append(f"{spec.name}: cannot list its tests: the probe printed no list")
            continue
        directory = module_directory(spec)
        if listed is None:
            found.append(ModuleTests(spec.name, directory, None))
            continue
        paths = tuple((directory / entry).resolve() for entry in listed)
        missing = [str(p) for p, entry in zip(paths, listed, strict=True) if not p.exists()]
        if missing:
            errors.append(
                f"{spec.name}: get_tests() lists a path that does not exist: {missing[0]}"
            )
            continue
        found.append(ModuleTests(spec.name, directory, paths))
    if errors:
        raise DiscoveryError("\n".join(errors))
    return found


def _text(file: IO[bytes]) -> str:
    """What the probe wrote to `file` (its last MiB: a module may print a lot at import)."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - _OUTPUT_KEPT))
    return file.read().decode("utf-8", "replace")


def _listed(out: str) -> object:
    """The probe's list (or None), from its last line: the module may print before it; a
    string (never a list) if the probe printed none."""
    last = next((line for line in reversed(out.splitlines()) if line.startswith(MARK)), "")
    try:
        return json.loads(last.removeprefix(MARK)) if last else ""
    except ValueError:
        return ""


def _kill_group(probe: subprocess.Popen[bytes]) -> None:
    """Kill the probe's session (the probe and whatever the module started) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(probe.pid, signal.SIGKILL)
    probe.wait()
