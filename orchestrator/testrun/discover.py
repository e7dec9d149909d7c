"""Asking each module for its tests, each in its own subprocess, all at once."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import ModuleSpec

_PROBE_TIMEOUT = 60.0


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


def discover(specs: list[ModuleSpec]) -> list[ModuleTests]:
    """Run `get_tests()` of every module in parallel subprocesses; raise DiscoveryError naming the
    first module that fails or lists a missing path."""
    probes = [
        (
            spec,
            subprocess.Popen(
                [sys.executable, "-m", "orchestrator.testrun.probe", spec.name, str(spec.path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=module_directory(spec),
            ),
        )
        for spec in specs
    ]
    found: list[ModuleTests] = []
    errors: list[str] = []
    for spec, probe in probes:
        try:
            out, err = probe.communicate(timeout=_PROBE_TIMEOUT)
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.communicate()
            errors.append(f"{spec.name}: importing the module took over {_PROBE_TIMEOUT:g}s")
            continue
        if probe.returncode != 0:
            message = err.strip().splitlines()[-1] if err.strip() else f"exit {probe.returncode}"
            errors.append(f"{spec.name}: cannot list its tests: {message}")
            continue
        listed = json.loads(out)
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
