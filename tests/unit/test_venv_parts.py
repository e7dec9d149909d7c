"""Module venvs without a supervisor: the config keys, the cache key, the lifecycle's refusal of a
module whose dependencies did not install, the builder's bookkeeping on disk, and the build
queue (real builder processes, made to fail at once)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import lifecycle as lc
from orchestrator.config import ConfigError, ModuleSpec, SupervisionSettings, load_config
from orchestrator.states import ChildState
from orchestrator.transition import transition
from orchestrator.venv import READY_MARKER, Environments, PlanError, plan_for
from orchestrator.venv.build import _move_into_place, _remove_abandoned
from orchestrator.venv.environments import INSTALL_FAILED, MAX_BUILDS, _cause, hide_credentials
from orchestrator.venv.plan import MAX_REQUIREMENTS_BYTES
from orchestrator.venv.sdk import sdk_parts

# -- config --------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "main.yaml").write_text("")
    package = tmp_path / "mods" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / "mods" / "one.py").write_text("")
    return tmp_path.resolve()


def modules(root: Path, text: str) -> tuple[ModuleSpec, ...]:
    (root / "config" / "modules.yaml").write_text(text)
    return load_config(root / "config").modules


def modules_error(root: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        modules(root, text)
    return str(info.value)


def test_requirements_come_from_the_list_or_the_package_file(root: Path) -> None:
    (root / "mods" / "pkg" / "requirements.txt").write_text("localpkg==1.0\n")
    one, pkg, plain = modules(
        root,
        "modules:\n"
        "- {name: one, path: ../mods/one.py, requirements: ['localpkg==2.0', ' --no-index ']}\n"
        "- {name: pkg, path: ../mods/pkg}\n"
        "- {name: plain, path: ../mods/one.py}\n",
    )
    assert one.requirements == ("localpkg==2.0", "--no-index") and one.requirements_file is None
    assert pkg.requirements is None and pkg.requirements_file == root / "mods/pkg/requirements.txt"
    assert one.own_environment and pkg.own_environment and not plain.own_environment


def test_python_is_a_path_beside_the_modules_file_or_a_name_on_path(root: Path) -> None:
    (spec,) = modules(
        root, f"modules:\n- {{name: one, path: ../mods/one.py, python: {sys.executable}}}\n"
    )
    assert spec.python == Path(sys.executable) and spec.own_environment
    (spec,) = modules(root, "modules:\n- {name: one, path: ../mods/one.py, python: sh}\n")
    assert spec.python is not None and spec.python.name == "sh"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("requirements: localpkg", "modules[0].requirements: expected a list, got 'localpkg'"),
        ("requirements: [1]", "modules[0].requirements[0]: expected a non-empty string, got 1"),
        ("requirements: ['']", "modules[0].requirements[0]: expected a non-empty string"),
        ('requirements: ["a\\nb"]', "modules[0].requirements[0]: expected one requirement line"),
        (
            "requirements: ['--find-links \"x']",
            "cannot split '--find-links \"x': No closing quotation",
        ),
        ("python: ./no/such/python", "modules[0].python: "),
        (
            "python: no-such-python-anywhere",
            "modules[0].python: no 'no-such-python-anywhere' on PATH",
        ),
        ("python: ../mods/one.py", "is not an executable file"),
        ("python: 3", "modules[0].python: expected a non-empty string, got 3"),
    ],
)
def test_bad_keys_name_file_and_field(root: Path, entry: str, expected: str) -> None:
    error = modules_error(root, f"modules:\n- {{name: one, path: ../mods/one.py, {entry}}}\n")
    assert "modules.yaml" in error and expected in error, error


def test_both_a_list_and_a_requirements_file_is_refused(root: Path) -> None:
    (root / "mods" / "pkg" / "requirements.txt").write_text("x\n")
    error = modules_error(root, "modules:\n- {name: pkg, path: ../mods/pkg, requirements: [y]}\n")
    assert "modules[0].requirements:" in error and "requirements.txt exists too" in error, error


def test_too_many_requirement_lines_are_refused(root: Path) -> None:
    lines = ", ".join(f"p{i}" for i in range(1001))
    error = modules_error(
        root, f"modules:\n- {{name: one, path: ../mods/one.py, requirements: [{lines}]}}\n"
    )
    assert "expected at most 1000 lines, got 1001" in error


# -- the cache key ---------------------------------------------------------------------------------


def spec_with(requirements: tuple[str, ...] | None = None, **more: object) -> ModuleSpec:
    return ModuleSpec("m", Path("/nowhere/m.py"), requirements=requirements, **more)  # type: ignore[arg-type]


def key(tmp_path: Path, spec: ModuleSpec, modules_file: str = "config/modules.yaml") -> str:
    return plan_for(spec, tmp_path / modules_file, tmp_path / "cache", sdk_parts()).key


def test_the_key_follows_the_lines_not_their_comments(tmp_path: Path) -> None:
    plain = key(tmp_path, spec_with(("localpkg==1.0",)))
    assert key(tmp_path, spec_with(("# old", "", "localpkg==1.0  # pinned"))) == plain
    assert key(tmp_path, spec_with(("localpkg==2.0",))) != plain
    assert key(tmp_path, spec_with(("localpkg==1.0",), python=Path("/bin/sh"))) != plain
    # A pin alone means the same thing anywhere: one venv serves modules in any directory.
    assert key(tmp_path, spec_with(("localpkg==1.0",)), "other/modules.yaml") == plain


def test_a_local_path_is_relative_to_somewhere_and_that_is_in_the_key(tmp_path: Path) -> None:
    local = spec_with(("./localpkg",))
    assert key(tmp_path, local) != key(tmp_path, local, "other/modules.yaml")


def test_a_requirements_file_is_read_bounded_and_strictly(tmp_path: Path) -> None:
    file = tmp_path / "requirements.txt"
    file.write_text("localpkg==1.0\n")
    from_file = key(tmp_path, spec_with(requirements_file=file))
    assert from_file == key(tmp_path, spec_with(("localpkg==1.0",)))
    file.write_bytes(b"x" * (MAX_REQUIREMENTS_BYTES + 1))
    with pytest.raises(PlanError, match="larger than 256 KiB"):
        key(tmp_path, spec_with(requirements_file=file))
    file.write_bytes(b"caf\xe9==1\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        key(tmp_path, spec_with(requirements_file=file))
    file.unlink()
    with pytest.raises(PlanError, match="No such file"):
        key(tmp_path, spec_with(requirements_file=file))
    os.mkfifo(file)  # read on the loop: a pipe with no writer must not block it
    with pytest.raises(PlanError, match="not a regular file"):
        key(tmp_path, spec_with(requirements_file=file))


def test_a_venv_without_its_marker_is_not_ready(tmp_path: Path) -> None:
    plan = plan_for(spec_with(("x",)), tmp_path / "m.yaml", tmp_path, sdk_parts())
    (plan.venv / "bin").mkdir(parents=True)
    (plan.venv / "bin" / "python").symlink_to(sys.executable)
    assert not plan.ready()
    (plan.venv / READY_MARKER).write_text("{}")
    assert plan.ready()


# -- the lifecycle ---------------------------------------------------------------------------------


def test_a_start_refused_for_its_dependencies_fails_once_and_says_why() -> None:
    why = f"{INSTALL_FAILED} (modules.yaml): ERROR: No matching distribution found for nope"
    start = lc.StartRequested(1.0, lc.Gate(failed=why))
    step = transition(lc.Life(), start, SupervisionSettings())
    assert step.life.state is ChildState.FAILED and step.life.why == why
    published = [e for e in step.effects if isinstance(e, lc.Publish)]
    assert [(e.event_type, e.data) for e in published] == [("module.failed", {"reason": why})]
    assert not any(isinstance(e, lc.Spawn) for e in step.effects)
    again = transition(
        step.life, lc.StartRequested(2.0, lc.Gate(failed=why)), SupervisionSettings()
    )
    assert again == lc.Step(step.life)  # no second announcement
    waiting = lc.Life(ChildState.WAITING, why="installing dependencies (modules.yaml)")
    step = transition(
        waiting, lc.DependencyChanged(3.0, lc.Gate(failed=why)), SupervisionSettings()
    )
    assert step.life.state is ChildState.FAILED


# -- the builder's bookkeeping ---------------------------------------------------------------------


def test_abandoned_builds_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f".build-k1-{dead.pid}"
    live = tmp_path / f".build-k1-{os.getpid()}"
    other = tmp_path / f".build-k2-{dead.pid}"
    for path in (gone, live, other):
        path.mkdir()
    _remove_abandoned(tmp_path, "k1")
    assert not gone.exists() and live.exists() and other.exists()


def built_venv(path: Path, marker: str) -> Path:
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)
    (path / READY_MARKER).write_text(marker)
    return path


def test_a_finished_build_replaces_a_half_venv_but_not_a_complete_one(tmp_path: Path) -> None:
    final, work = tmp_path / "k", tmp_path / ".build-k-1"
    (final / "bin").mkdir(parents=True)  # left half-built, without its marker
    built_venv(work, "new")
    _move_into_place(work, final)
    assert (final / READY_MARKER).read_text() == "new" and not work.exists()
    built_venv(work, "newer")
    _move_into_place(work, final)  # another build got there first: its venv stays
    assert (final / READY_MARKER).read_text() == "new" and not work.exists()


# -- the build queue -------------------------------------------------------------------------------


class Reaper:
    """Stands in for the loop's reaper: what `watch_exit` was told, reaped on demand."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.spawned = 0

    def watch_exit(self, pid: int, handler: Callable[[int], None] | None) -> None:
        if handler is None:
            self.handlers.pop(pid, None)
        else:
            self.handlers[pid] = handler
            self.spawned += 1

    def reap_all(self) -> None:
        for pid, handler in list(self.handlers.items()):
            _, raw = os.waitpid(pid, 0)
            del self.handlers[pid]
            handler(raw)


def failing_python(tmp_path: Path, name: str) -> Path:
    """An 'interpreter' that fails at once, with an error line, like a broken install."""
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho 'ERROR: {name} cannot make a venv' >&2\nexit 3\n")
    script.chmod(0o755)
    return script


def test_builds_are_bounded_remembered_when_failed_and_retried_on_request(tmp_path: Path) -> None:
    reaper, changes = Reaper(), []
    envs = Environments(
        tmp_path, tmp_path / "modules.yaml", reaper.watch_exit, lambda: changes.append(1)
    )
    specs = [
        ModuleSpec(f"m{i}", tmp_path / "m.py", python=failing_python(tmp_path, f"py{i}"))
        for i in range(MAX_BUILDS + 1)
    ]
    answers = [envs.prepare(spec) for spec in specs]
    assert all(a.waiting and a.python is None and a.failed is None for a in answers), answers
    assert reaper.spawned == MAX_BUILDS  # the last one is queued
    assert "queued" in str(answers[-1].waiting)
    assert envs.status(specs[-1])["dependencies"] == "queued"
    reaper.reap_all()
    assert reaper.spawned == MAX_BUILDS + 1 and changes  # the queued one started, waiters woken
    reaper.reap_all()
    failed = envs.prepare(specs[0])
    assert failed.failed is not None and "py0 cannot make a venv" in failed.failed, failed
    assert envs.status(specs[0]) == {
        "interpreter": str(envs._plans["m0"].python),
        "dependencies": "failed",
        "install_log": str(envs._plans["m0"].log),  # the hint after the failure points there
    }
    assert any("py0 cannot make a venv" in line for line in envs.details(specs[0])["install_error"])
    for _ in range(3):  # asked again and again (a restart policy would): never rebuilt
        assert envs.prepare(specs[0]).failed == failed.failed
    assert reaper.spawned == MAX_BUILDS + 1 and not envs.preparing(specs[0])
    envs.forget_failure(specs[0])  # `orchestrator restart m0`
    assert envs.prepare(specs[0]).waiting and reaper.spawned == MAX_BUILDS + 2
    assert envs.preparing(specs[0])
    (pid,) = reaper.handlers
    envs.close()  # kills the build under way
    assert not reaper.handlers
    os.waitpid(pid, 0)  # the supervisor's final sweep would reap it
    assert not list(tmp_path.glob(".orchestrator/venvs/*/" + READY_MARKER))


def test_a_module_without_dependencies_runs_on_the_supervisors_python(tmp_path: Path) -> None:
    reaper = Reaper()
    envs = Environments(tmp_path, tmp_path / "modules.yaml", reaper.watch_exit, lambda: None)
    spec = ModuleSpec("plain", tmp_path / "m.py")
    assert envs.prepare(spec) == (None, None, None) and reaper.spawned == 0
    assert envs.launch_env(spec, "/bin") == (None, {})
    assert envs.status(spec) == {"interpreter": sys.executable, "dependencies": None}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["Looking in links: /x", "ERROR: Could not find a version", "ERROR: No matching x==9"],
            "ERROR: No matching x==9",
        ),
        (
            [
                "error: No solution found when resolving dependencies:",
                "╰─▶ Because x was not found",
            ],
            "error: No solution found when resolving dependencies: ╰─▶ Because x was not found",
        ),
        (
            ["[build] error: creating the venv failed (exit 3)"],
            "[build] error: creating the venv failed (exit 3)",
        ),
        (["ERROR: " + "x" * 1000], "ERROR: " + "x" * 392 + "…"),
    ],
)
def test_the_cause_is_the_installers_own_last_error(lines: list[str], expected: str) -> None:
    assert _cause(lines) == expected


def test_credentials_in_an_index_url_are_hidden() -> None:
    line = "installing: pip install --index-url https://user:t0ken@pkgs.example/simple -r x"
    assert (
        hide_credentials(line)
        == "installing: pip install --index-url https://***@pkgs.example/simple -r x"
    )
    assert hide_credentials("ERROR: see user@example.com") == "ERROR: see user@example.com"


def test_a_requirements_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("a==1\n")
    spec = ModuleSpec("m", tmp_path / "m", requirements_file=requirements)
    reaper = Reaper()
    envs = Environments(tmp_path, tmp_path / "modules.yaml", reaper.watch_exit, lambda: None)
    plan = plan_for(spec, tmp_path / "modules.yaml", envs.cache, sdk_parts())
    (plan.venv / "bin").mkdir(parents=True)
    (plan.venv / "bin" / "python").symlink_to(sys.executable)
    (plan.venv / READY_MARKER).write_text("{}")
    assert envs.prepare(spec).python == plan.python and reaper.spawned == 0  # a cache hit
    python, env = envs.launch_env(spec, "/usr/bin")  # the venv active, as a shell would have it
    assert python == plan.python
    assert env == {"VIRTUAL_ENV": str(plan.venv), "PATH": f"{plan.venv}/bin:/usr/bin"}
    assert envs._plan(spec) is envs._plan(spec)  # not read again
    requirements.write_text("a==2\n")
    assert envs._plan(spec).key != plan.key


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_a_fifo_or_link_in_the_venv_cache_fails_the_build_not_the_supervisor(
    tmp_path: Path, kind: str
) -> None:
    """The supervisor opened `<key>.log` as it found it: a FIFO there held its loop until
    someone read it, a link made root overwrite the file it pointed at. (A hang fails on the
    test's timeout.)"""
    from orchestrator.venv.sdk import sdk_parts

    reaper = Reaper()
    envs = Environments(tmp_path, tmp_path / "modules.yaml", reaper.watch_exit, lambda: None)
    spec = ModuleSpec("m", tmp_path / "m.py", python=failing_python(tmp_path, "py"))
    plan = plan_for(spec, tmp_path / "modules.yaml", envs.cache, sdk_parts())
    envs.cache.mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep me")
    if kind == "fifo":
        os.mkfifo(plan.log)
    else:
        plan.log.symlink_to(target)
    answer = envs.prepare(spec)
    assert answer.failed is not None and "cannot start the build" in answer.failed, answer
    assert reaper.spawned == 0 and target.read_text() == "keep me"
