"""`orchestrator init` and `orchestrator new`, through the real CLI: a project from scratch run by
an installed (not editable) copy of the package, refusals that write nothing, and `new` on the
modules.yaml files a new project has."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import wait_until
from project import REPO, Project, describe

from orchestrator import exit_codes
from orchestrator.cli.common import CONFIG_ENV
from orchestrator.config import load_config

README = (REPO / "README.md").read_text()
_OWN_PROJECT = re.compile(r"<!-- own-project -->\n```sh\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The package as `pip install` puts it into an environment (not editable), once per module.

    pip builds from a copy of the sources, so that nothing it writes (build/, *.egg-info) lands in
    the tree."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("orchestrator", "module_sdk", "broker"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            target,
            source,
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    yield target
    shutil.rmtree(source, ignore_errors=True)


def run(
    project: Project,
    cwd: Path,
    *args: str,
    check: int | None = 0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`orchestrator ARGS` as a user types it in `cwd`: no -c, the project's run directory."""
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env or project.env,
        cwd=cwd,
    )
    if check is not None:
        assert result.returncode == check, f"orchestrator {shlex.join(args)}: {describe(result)}"
    return result


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.timeout(180)  # with the `installed` fixture's pip install: 11-33 s, 50 s at most
def test_the_readme_project_runs_from_an_installed_package(
    project: Project, installed: Path
) -> None:
    """The README's "Start your own project", line by line, from a directory outside the repo,
    with the package installed by pip: nothing may come from the source tree."""
    project.env["PYTHONPATH"] = str(installed)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import orchestrator, module_sdk, broker; "
            "print(orchestrator.__file__, module_sdk.__file__, broker.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=project.env,
        cwd=project.root,
    )
    for file in probe.stdout.split():
        assert Path(file).is_relative_to(installed), probe.stdout
    lines = _OWN_PROJECT.search(README)
    assert lines, "the README has no <!-- own-project --> block"
    cwd = project.root
    outputs: dict[str, str] = {}
    try:
        for line in lines.group(1).splitlines():
            command = shlex.split(line, comments=True)
            if command[0] == "cd":
                cwd = cwd / command[1]
                continue
            assert command[0] == "orchestrator", line
            result = run(project, cwd, *command[1:])
            outputs[command[1]] = result.stdout + result.stderr
            if command[1] == "up":
                status = json.loads(run(project, cwd, "status", "--json").stdout)
                assert [(m["name"], m["state"]) for m in status["modules"]] == [
                    ("example", "running")
                ]
                supervisor = status["supervisor"]["pid"]
                environ = Path(f"/proc/{supervisor}/environ").read_bytes().split(b"\0")
                assert f"PYTHONPATH={installed}".encode() in environ
            if command[1] == "reload":
                wait_until(
                    lambda here=cwd: re.search(
                        r"mod-weather +running", run(project, here, "status").stdout
                    ),
                    15,
                    "mod-weather running",
                )
    finally:
        if (cwd / "config").is_dir():
            run(project, cwd, "down", check=None)
    assert "config/main.yaml" in outputs["init"] and "cd my-project" in outputs["init"]
    assert re.search(r"example +running", outputs["status"]), outputs["status"]
    assert "1 passed" in outputs["test"], outputs["test"]
    assert "orchestrator reload" in outputs["new"], outputs["new"]  # the next step it names
    assert "stopped" in outputs["down"]
    wait_until(lambda: project.processes() == [], 10, "no process left")
    assert (cwd / "logs" / "example.log").is_file()


def test_init_refuses_to_overwrite_and_writes_nothing(project: Project) -> None:
    mine = "modules:\n  - name: mine\n    path: ../modules/mine.py\n"
    (project.config_dir / "modules.yaml").write_text(mine)
    (project.root / ".gitignore").write_text("*.pyc\nlogs/")  # a repository's own: kept
    before = listing(project.root)
    refused = run(project, project.root, "init", check=exit_codes.FAILED)
    assert "these files exist already: config/modules.yaml;" in refused.stderr, describe(refused)
    assert "nothing was written" in refused.stderr
    assert listing(project.root) == before
    assert (project.config_dir / "modules.yaml").read_text() == mine
    assert (project.root / ".gitignore").read_text() == "*.pyc\nlogs/"
    forced = run(project, project.root, "init", "--force")
    assert "config/modules.yaml (replaced)" in forced.stdout, describe(forced)
    assert ".gitignore (lines added)" in forced.stdout, describe(forced)
    assert [m.name for m in load_config(project.config_dir).modules] == ["example"]
    ignored = (project.root / ".gitignore").read_text().splitlines()
    assert ignored[:2] == ["*.pyc", "logs/"] and ".env" in ignored and ignored.count("logs/") == 1


def test_init_json_names_what_it_wrote(project: Project) -> None:
    result = run(project, project.root, "init", "sub dir", "--json")
    document = json.loads(result.stdout)
    root = project.root / "sub dir"
    assert document["directory"] == str(root)
    assert document["replaced"] == []
    assert document["next"][:2] == ["cd 'sub dir'", "orchestrator up -d"]
    assert sorted(document["written"]) == listing_files(root)
    assert "config/main.yaml" in document["written"]
    assert (root / "config" / ".env.example").is_file()


def test_init_warns_when_orchestrator_config_names_another_project(project: Project) -> None:
    """With ORCHESTRATOR_CONFIG set, `init p3` wrote ./p3, and the next steps it listed (`up -d`,
    `new NAME --add`) then acted on the project that variable named."""
    other = str(project.config_dir)
    result = run(project, project.root, "init", "p3", env={**project.env, CONFIG_ENV: other})
    ours = project.root / "p3" / "config"
    assert result.stderr == (
        f"warning: ORCHESTRATOR_CONFIG is set to {other}: the next steps act on {other}, not on"
        f" this project; `unset ORCHESTRATOR_CONFIG` first, or give them -c {ours}\n"
    ), describe(result)
    assert "orchestrator up -d" in result.stdout
    # Naming the project written (relative, as from the `cd` the steps begin with): no warning.
    for name, value in (("p4", "config"), ("p5", str(project.root / "p5"))):
        quiet = run(project, project.root, "init", name, env={**project.env, CONFIG_ENV: value})
        assert quiet.stderr == "", describe(quiet)


def listing_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("text", ["", "# no modules yet\n", "modules:\n", "modules: []\n"])
def test_new_add_on_an_empty_modules_yaml(project: Project, text: str) -> None:
    (project.config_dir / "modules.yaml").write_text(text)
    result = project.cli("new", "mod-a", "--add", check=0)
    assert "added mod-a to" in result.stdout
    modules = load_config(project.config_dir).modules
    assert [(m.name, m.path) for m in modules] == [
        ("mod-a", (project.root / "modules-backend" / "mod-a").resolve())
    ]
    if text == "modules: []\n":  # the generated test passes, under the name it was given
        tested = project.cli("test", "mod-a", check=0)
        assert re.search(r"^mod-a +1 +1 +0", tested.stdout, re.M), describe(tested)


def test_a_new_that_fails_leaves_nothing_and_the_retry_works(project: Project) -> None:
    flow = "modules: [{name: idle, path: ../modules/idle.py}]\n"
    (project.config_dir / "modules.yaml").write_text(flow)
    project.probe("idle")
    before = listing(project.root)
    bad_name = project.cli("new", "../escape", "--add", check=exit_codes.USAGE)
    assert "invalid module name '../escape'" in bad_name.stderr
    refused = project.cli("new", "mod-a", "--add", check=exit_codes.FAILED)
    assert "cannot add the entry" in refused.stderr and "by hand" in refused.stderr
    assert '- name: "mod-a"' in refused.stderr  # the entry to add
    taken = project.cli("new", "idle", "--add", check=exit_codes.FAILED)
    assert "it has a module named 'idle' already" in taken.stderr
    assert listing(project.root) == before
    assert (project.config_dir / "modules.yaml").read_text() == flow
    (project.config_dir / "modules.yaml").write_text(
        "modules:\n  - name: idle\n    path: ../modules/idle.py\n"
    )
    project.cli("new", "mod-a", "--add", check=0)
    assert [m.name for m in load_config(project.config_dir).modules] == ["idle", "mod-a"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_new_that_cannot_write_modules_yaml_takes_its_module_back(project: Project) -> None:
    (project.config_dir / "modules.yaml").write_text("modules: []\n")
    before = listing(project.root)
    project.config_dir.chmod(0o555)  # modules.yaml is staged last, after the module's directory
    try:
        failed = project.cli("new", "mod-a", "--add", check=exit_codes.FAILED)
    finally:
        project.config_dir.chmod(0o755)
    assert "Permission denied; nothing was written" in failed.stderr
    assert listing(project.root) == before
    project.cli("new", "mod-a", "--add", check=0)


def test_new_names_the_next_step(project: Project) -> None:
    project.configure([])
    stopped = project.cli("new", "mod-a", "--add", check=0)
    assert "orchestrator up -d " in stopped.stdout, describe(stopped)
    project.up()
    project.wait_module("mod-a", state="running")
    running = project.cli("new", "mod-b", "--add", check=0)
    assert "orchestrator reload " in running.stdout, describe(running)
    project.cli("reload", check=0)
    project.wait_module("mod-b", state="running")
    main_file = project.config_dir / "main.yaml"
    main_file.write_text(
        yaml.safe_dump({**yaml.safe_load(main_file.read_text()), "hot_reload": True})
    )
    project.cli("reload", check=0)  # turns hot reload on
    hot = project.cli("new", "mod-c", "--add", check=0)
    assert "(hot reload on) is starting it already" in hot.stdout, describe(hot)
    project.wait_module("mod-c", state="running")
    unlisted = project.cli("new", "mod-d", check=0)  # -c given, but it is ./config: not repeated
    assert "starts it once modules.yaml lists it" in unlisted.stdout, describe(unlisted)
    assert "orchestrator test mod-d " in unlisted.stdout and " -c " not in unlisted.stdout
