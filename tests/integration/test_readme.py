"""The README's tutorial, run as written, and every CLI command it shows exists and is tested."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from project import REPO, Project

from orchestrator import exit_codes
from orchestrator.cli.group import COMMANDS

README = (REPO / "README.md").read_text()
_BLOCK = re.compile(r"<!-- tutorial-(file|append|shell)(?:: (\S+))? -->\n```\w*\n(.*?)```", re.S)


def test_the_tutorial_works_as_written(project: Project) -> None:
    project.copy_demo()
    steps = _BLOCK.findall(README)
    assert [kind for kind, _, _ in steps] == ["file", "file", "append", "shell"]
    outputs: dict[str, str] = {}
    for kind, target, body in steps:
        if kind == "file":
            path = project.root / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif kind == "append":
            path = project.root / target
            path.write_text(path.read_text().rstrip("\n") + "\n\n" + body)
        else:
            for line in body.splitlines():
                command = shlex.split(line, comments=True)
                assert command[0] == "orchestrator", line
                result = project.cli(*command[1:], check=0)
                outputs[command[1]] = result.stdout + result.stderr
    assert "mod-hello" in outputs["status"] and "running" in outputs["status"]
    assert "published hello.ping" in outputs["publish"]
    assert "mod_hello: Hello, world!" in outputs["logs"], outputs["logs"]
    assert "1 passed" in outputs["test"], outputs["test"]
    assert project.processes() == []


def test_every_command_the_readme_shows_exists_and_is_exercised_by_a_test() -> None:
    shown = set(re.findall(r"orchestrator (\w[\w-]*)", README))
    assert shown <= set(COMMANDS), shown - set(COMMANDS)
    tests = "".join(p.read_text() for p in Path(__file__).resolve().parent.glob("test_*.py"))
    for command in COMMANDS:
        assert re.search(rf'cli\(\s*"{command}"|"{command}",', tests), f"no test runs {command}"


def test_the_readme_names_the_two_setup_commands_first() -> None:
    setup = README.split("## Set up", 1)[1].split("##", 1)[0]
    assert setup.index("make up") < setup.index("make test"), setup


def test_the_readme_says_the_run_base_must_be_private_as_up_does(project: Project) -> None:
    """The README did not say that ORCHESTRATOR_RUN_BASE must be private: a shared one made `up`
    fail with an error it never mentioned."""
    project.configure([{"name": "idle", "path": project.probe("idle")}])
    shared = project.root / "shared-run"
    shared.mkdir()
    shared.chmod(0o755)
    project.env["ORCHESTRATOR_RUN_BASE"] = str(shared)
    result = project.cli("up", "-d", check=exit_codes.FAILED)
    said = result.stderr.strip().replace(str(shared), "BASE")
    assert said == "Error: unsafe run directory: BASE: mode 755 lets others in; expected 700"
    documented = " ".join(README.split())  # as written, across its line breaks
    pattern = re.escape(said).replace("BASE", r"/\S+")
    assert re.search(pattern, documented), f"the README does not quote {said!r}"
    assert re.search(r"ORCHESTRATOR_RUN_BASE[^.]*\. That base must be private", documented)
