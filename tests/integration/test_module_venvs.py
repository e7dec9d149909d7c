"""Modules with dependencies of their own, in venvs the supervisor builds: real builds (pip,
offline: the packages are wheels made here), real module processes, the real CLI.

One project serves the module's tests (venv builds are slow): two modules pinning conflicting
versions of one package, one whose requirement does not exist, one on another interpreter, and a
plain module on the supervisor's interpreter that records what the others announce.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until
from project import Project, projects
from venv_kit import (
    REPORTER,
    make_wheels,
    offline_package,
    other_python,
    path_with_uv,
    path_without_uv,
    reported,
    reports,
)

from orchestrator.venv import READY_MARKER

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def built() -> Iterator[Project]:
    """The project, up once: every venv in it built (or failed) by the first `up`."""
    for project in projects():
        project.env["PATH"] = path_without_uv()  # pip here; uv in its own test
        make_wheels(project)
        pinned_one = offline_package(project, "pinned_one", "1.0")
        reporter = project.write_module("reporter.py", REPORTER)
        record = str(project.record_file)
        offline = ["--no-index", "--find-links ../wheels"]  # relative to config/
        project.configure(
            [
                {
                    "name": "recorder",
                    "path": project.probe("recorder"),
                    "config": {"record": record},
                },
                {
                    "name": "pinned_one",
                    "path": pinned_one,
                    "config": {"name": "pinned_one"},
                    "depends_on": ["recorder"],
                },
                {
                    "name": "pinned_two",
                    "path": reporter,
                    "config": {"name": "pinned_two"},
                    "requirements": [*offline, "localpkg==2.0"],
                    "depends_on": ["recorder"],
                },
                {
                    "name": "broken",
                    "path": reporter,
                    "config": {"name": "broken"},
                    "requirements": ["--no-index", "no-such-package-orchestrator-test==9.9"],
                },
                {
                    "name": "elsewhere",
                    "path": reporter,
                    "config": {"name": "elsewhere"},
                    "python": other_python(),
                    "depends_on": ["recorder"],
                },
            ]
        )
        result = project.cli("up", "-d", timeout=200)
        assert result.returncode == 1, result.stderr  # `broken` did not start
        yield project


def rows(project: Project) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in project.status()["modules"]}


def markers(project: Project) -> dict[Path, int]:
    cache = project.root / ".orchestrator" / "venvs"
    return {path: path.stat().st_mtime_ns for path in cache.glob(f"*/{READY_MARKER}")}


def test_conflicting_pins_both_run_each_in_its_own_venv(built: Project) -> None:
    found = wait_until(
        lambda: reported(built, {"pinned_one", "pinned_two"}),
        20,
        "both pinned modules report",
        lambda: built.log("pinned_one") + built.log("pinned_two"),
    )
    assert found["pinned_one"]["version"] == "1.0"
    assert found["pinned_two"]["version"] == "2.0"
    cache = str(built.root / ".orchestrator" / "venvs")
    status = rows(built)
    for name in ("pinned_one", "pinned_two"):
        assert status[name]["state"] == "running", status[name]
        assert status[name]["dependencies"] == "ready"
        assert status[name]["interpreter"] == found[name]["python"]
        assert found[name]["python"].startswith(cache), found[name]
        # Only module_sdk and its own dependencies reach the venv: not the supervisor's yaml.
        assert found[name]["sees_yaml"] is False
    assert found["pinned_one"]["python"] != found["pinned_two"]["python"]
    for name in ("pinned_one", "pinned_two"):  # no uv on PATH: pip installed them
        venv = Path(found[name]["python"]).parents[1]  # <cache>/<key>/bin/python
        log = venv.with_name(f"{venv.name}.{built.config_dir.name}.log")
        assert " -m pip --python " in log.read_text(), log.read_text()
        # What it was built from may name an index with its credentials: the owner's only.
        assert (venv / READY_MARKER).stat().st_mode & 0o777 == 0o600
    assert status["recorder"]["interpreter"] == sys.executable
    assert status["recorder"]["dependencies"] is None
    # Nothing was written into the module's own directory.
    assert sorted(p.name for p in (built.root / "modules" / "pinned_one").iterdir()) == [
        "__init__.py",
        "requirements.txt",
    ]


def test_a_broken_requirement_fails_that_module_alone(built: Project) -> None:
    row = built.wait_module("broken", 20, state="failed")
    assert "dependencies did not install" in row["why"], row
    assert "no-such-package-orchestrator-test" in row["why"], row
    assert row["dependencies"] == "failed"
    assert 0 < len(row["install_error"]) <= 20
    assert any("no-such-package-orchestrator-test" in line for line in row["install_error"])
    assert row["pid"] is None and row["restarts"] == 0
    shown = built.cli("status", "broken", check=0).stdout
    assert "install error" in shown and "no-such-package-orchestrator-test" in shown, shown
    assert "dependencies did not install" in (built.root / "logs" / "app.log").read_text()
    others = rows(built)
    assert all(others[n]["state"] == "running" for n in ("recorder", "pinned_one", "pinned_two"))
    # A restart asks for a new build: it fails the same way, and says so.
    log = built.root / ".orchestrator" / "venvs"
    before = {p: p.stat().st_mtime_ns for p in log.glob("*.log")}
    result = built.cli("restart", "broken", timeout=120, check=1)
    assert "no-such-package-orchestrator-test" in result.stderr, result.stderr
    after = {p: p.stat().st_mtime_ns for p in log.glob("*.log")}
    assert [p for p in after if after[p] != before.get(p)], "the restart built nothing"


def test_python_names_the_interpreter_the_venv_is_built_from(built: Project) -> None:
    found = wait_until(
        lambda: reports(built).get("elsewhere"),
        20,
        "elsewhere reports",
        lambda: built.log("elsewhere"),
    )
    row = built.cli("status", "elsewhere", "--json", check=0)
    detail = json.loads(row.stdout)["modules"][0]
    assert detail["state"] == "running"
    assert detail["venv_python"] == other_python()
    assert detail["interpreter"] == found["python"]
    assert found["version"] is None  # no localpkg there
    base = Path(other_python()).resolve()
    venv_config = (Path(detail["venv"]) / "pyvenv.cfg").read_text()
    assert f"home = {base.parent}" in venv_config, venv_config


def test_a_second_up_takes_the_venvs_from_the_cache(built: Project) -> None:
    first = markers(built)
    assert len(first) == 3, first  # pinned_one, pinned_two, elsewhere: `broken` never completed
    built.cli("down", check=0, timeout=60)
    built.record_file.unlink()
    built.cli("up", "-d", timeout=200, check=1)  # `broken` still does not install
    wait_until(
        lambda: reported(built, {"pinned_one", "pinned_two", "elsewhere"}),
        20,
        "every module reports again",
        lambda: str(rows(built)),
    )
    assert markers(built) == first  # not rebuilt: the same venvs, untouched
    cache = built.root / ".orchestrator" / "venvs"
    assert not list(cache.glob(".build-*")), list(cache.iterdir())


def test_uv_builds_them_when_it_is_on_path(project: Project) -> None:
    project.env["PATH"] = path_with_uv()
    make_wheels(project)
    reporter = project.write_module("reporter.py", REPORTER)
    project.configure(
        [
            {
                "name": "recorder",
                "path": project.probe("recorder"),
                "config": {"record": str(project.record_file)},
            },
            {
                "name": "uv_file",
                "path": offline_package(project, "uv_file", "2.0"),
                "config": {"name": "uv_file"},
                "depends_on": ["recorder"],
            },
            {
                "name": "uv_list",
                "path": reporter,
                "config": {"name": "uv_list"},
                # uv reads a requirements file's relative paths beside it: these are
                # arguments, relative to config/ as pip reads them.
                "requirements": ["--no-index", "--find-links ../wheels", "localpkg==1.0"],
                "depends_on": ["recorder"],
            },
        ]
    )
    project.cli("up", "-d", timeout=200, check=0)
    found = wait_until(
        lambda: reported(project, {"uv_file", "uv_list"}),
        20,
        "both report",
    )
    assert found["uv_file"]["version"] == "2.0" and found["uv_list"]["version"] == "1.0"
    logs = [log.read_text() for log in (project.root / ".orchestrator" / "venvs").glob("*.log")]
    assert len(logs) == 2 and all("/uv pip install --python" in log for log in logs), logs


def test_a_changed_requirement_restarts_the_module_onto_a_new_venv(built: Project) -> None:
    # Last in this file: it changes the shared project.
    modules_file = built.config_dir / "modules.yaml"
    before = markers(built)
    text = modules_file.read_text()
    assert text.count("localpkg==2.0") == 1
    modules_file.write_text(text.replace("localpkg==2.0", "localpkg==1.0"))
    built.cli("reload", check=0, timeout=60)

    def reported_one() -> dict[str, Any] | None:
        latest = [
            line["data"]
            for line in built.recorded()
            if line["type"] == "deps.report" and line["data"]["module"] == "pinned_two"
        ]
        return latest[-1] if latest and latest[-1]["version"] == "1.0" else None

    found = wait_until(reported_one, 60, "pinned_two on localpkg 1.0", lambda: str(rows(built)))
    row = built.wait_module("pinned_two", 10, state="running", dependencies="ready")
    assert found["python"] == row["interpreter"]
    after = markers(built)
    assert len(after) == len(before) + 1 and all(after[p] == before[p] for p in before)
