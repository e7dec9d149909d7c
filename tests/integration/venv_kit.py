"""What the module-venv tests share: a module that reports what it runs with, wheels made by
hand (offline, no build backend), another interpreter, and the reports as recorded."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

from project import Project

# Publishes what it runs with, once the recorder (which it depends on) runs.
REPORTER = """
import importlib.util, sys

def initialize(event_bus, config):
    try:
        import localpkg
        version = localpkg.VERSION
    except ImportError:
        version = None
    event_bus.publish("deps.report", {
        "module": config["name"],
        "version": version,
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "sees_yaml": importlib.util.find_spec("yaml") is not None,
    })

def shutdown():
    pass
"""


def make_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel of package `name` whose `VERSION` is `version`, made by hand: no build
    backend, no index, nothing from the network."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'VERSION = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def other_python() -> str:
    """Another interpreter of the same ABI if the machine has one, else the base interpreter."""
    debian = Path("/usr/bin/python3.11")
    if sys.version_info[:2] == (3, 11) and debian.is_file():
        return str(debian)
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def reports(project: Project) -> dict[str, dict[str, Any]]:
    """What each module announced, by module name."""
    return {
        line["data"]["module"]: line["data"]
        for line in project.recorded()
        if line["type"] == "deps.report"
    }


def reported(project: Project, names: set[str]) -> dict[str, dict[str, Any]] | None:
    """Every report so far once each of `names` has reported, else None."""
    found = reports(project)
    return found if names <= set(found) else None


def path_without_uv() -> str:
    """PATH without the directories that hold a `uv`: the supervisor then installs with pip."""
    keep = [
        d for d in os.environ.get("PATH", "").split(os.pathsep) if not shutil.which("uv", path=d)
    ]
    return os.pathsep.join(keep)


def path_with_uv() -> str:
    """PATH with the development environment's `uv` (a dev dependency) first."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv is not None, "uv is a development dependency: run `make dev`"
    return os.pathsep.join([str(Path(uv).parent), os.environ.get("PATH", "")])


def offline_package(project: Project, name: str, version: str) -> str:
    """A package module whose requirements.txt pins localpkg `version` from the project's wheels
    (relative paths in it resolve beside it); returns its path for modules.yaml."""
    package = project.root / "modules" / name
    package.mkdir()
    (package / "__init__.py").write_text(REPORTER)
    (package / "requirements.txt").write_text(
        f"# offline\n--no-index\n--find-links ../../wheels\nlocalpkg=={version}  # pinned\n"
    )
    return f"../modules/{name}"


def make_wheels(project: Project) -> None:
    """localpkg 1.0 and 2.0 in the project's `wheels/`."""
    wheels = project.root / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "localpkg", "1.0")
    make_wheel(wheels, "localpkg", "2.0")
