"""Builds of module venvs, as they meet: two builds of one key (two supervisors of one
project), a venv that lost its python, and builds that no module needs any more."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_venv_parts import Reaper, built_venv, failing_python, spec_with

from orchestrator.config import ModuleSpec
from orchestrator.venv import READY_MARKER, Environments, plan_for
from orchestrator.venv.build import _move_into_place
from orchestrator.venv.environments import MAX_BUILDS
from orchestrator.venv.sdk import sdk_parts


def test_a_build_moves_into_place_only_under_the_keys_lock(tmp_path: Path) -> None:
    """Another supervisor's builder of the same key renamed its venv in between this one's
    look and its own rename: the look and the rename are one step under `.<key>.lock`."""
    import fcntl
    import threading

    final, work = tmp_path / "k", built_venv(tmp_path / ".build-k-1", "ours")
    with open(tmp_path / ".k.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other builder is moving its venv in
        mover = threading.Thread(target=_move_into_place, args=(work, final))
        mover.start()
        mover.join(0.5)
        assert mover.is_alive(), "moved without waiting for the lock"
        built_venv(final, "theirs")
    mover.join()
    assert (final / READY_MARKER).read_text() == "theirs" and not work.exists()


def test_two_supervisors_of_one_project_build_with_their_own_job_and_log(tmp_path: Path) -> None:
    reaper = Reaper()
    python = failing_python(tmp_path, "py")
    spec = ModuleSpec("m", tmp_path / "m.py", python=python)
    for name in ("configA", "configB"):
        (tmp_path / name).mkdir()
    first, second = (
        Environments(tmp_path, tmp_path / name / "modules.yaml", reaper.watch_exit, lambda: None)
        for name in ("configA", "configB")
    )
    assert first.prepare(spec).waiting and second.prepare(spec).waiting
    assert reaper.spawned == 2
    logs = {first.details(spec)["install_log"], second.details(spec)["install_log"]}
    assert len(logs) == 2, logs
    reaper.reap_all()
    for envs in (first, second):
        failed = envs.prepare(spec).failed
        assert failed is not None and "py cannot make a venv" in failed, failed
    assert not list(first.cache.glob(".job-*"))


def test_a_venv_that_lost_its_python_is_replaced_by_the_next_build(tmp_path: Path) -> None:
    """It kept its marker, so the builder took it for complete and threw the new venv away,
    while the loop (which also asks for bin/python) saw it unusable: never rebuilt."""
    cache = tmp_path / "cache"
    plan = plan_for(spec_with(("x",)), tmp_path / "m.yaml", cache, sdk_parts())
    plan.venv.mkdir(parents=True)
    (plan.venv / READY_MARKER).write_text("old")  # bin/python is gone
    assert not plan.ready()
    _move_into_place(built_venv(cache / f".build-{plan.key}-1", "new"), plan.venv)
    assert plan.ready() and (plan.venv / READY_MARKER).read_text() == "new"


def test_a_build_no_module_needs_is_cancelled_and_frees_its_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two builds that hang hold both slots; a reload changes one module's requirements and
    removes the other: both are killed at once, the corrected build starts without waiting, and
    neither stale build is logged as a failure of a module."""
    reaper = Reaper()
    envs = Environments(tmp_path, tmp_path / "modules.yaml", reaper.watch_exit, lambda: None)
    hanging = []
    for i in range(MAX_BUILDS):
        script = tmp_path / f"hang{i}"
        script.write_text("#!/bin/sh\nexec sleep 600\n")
        script.chmod(0o755)
        hanging.append(ModuleSpec(f"m{i}", tmp_path / "m.py", python=script))
    assert all(envs.prepare(spec).waiting for spec in hanging)
    assert reaper.spawned == MAX_BUILDS
    fixed = ModuleSpec("m0", tmp_path / "m.py", python=failing_python(tmp_path, "fixed"))
    answer = envs.prepare(fixed)  # m0's python changed: a new key
    assert "queued" not in str(answer.waiting) and reaper.spawned == MAX_BUILDS + 1, answer
    envs.forget("m1")  # removed by the reload (or stopped)
    assert not envs.preparing(hanging[1]) and envs.status(hanging[1])["dependencies"] is None
    with caplog.at_level(logging.INFO, logger="orchestrator.venv.environments"):
        reaper.reap_all()  # the two killed builds, and the corrected one (which fails at once)
    failed = envs.prepare(fixed).failed
    assert failed is not None and "fixed cannot make a venv" in failed, failed
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("m0: "), errors


def test_the_hint_after_an_install_failure_is_the_install_log() -> None:
    """`up -d` and `status` pointed at the module's own log, which has nothing of the install."""
    from orchestrator.cli.status import log_hint

    row = {"log": "logs/m.log", "dependencies": "failed", "install_log": ".orchestrator/k.c.log"}
    assert log_hint(row) == "install log: .orchestrator/k.c.log"
    assert log_hint({**row, "dependencies": "ready"}) == "log: logs/m.log"


def test_any_error_planning_a_venv_fails_that_module_not_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """prepare() runs on the supervisor's loop: an exception it let through ended the loop."""

    def broken(*args: object) -> None:
        raise ValueError("embedded null byte")

    monkeypatch.setattr("orchestrator.venv.environments.plan_for", broken)
    envs = Environments(tmp_path, tmp_path / "modules.yaml", Reaper().watch_exit, lambda: None)
    spec = ModuleSpec("m", tmp_path / "m.py", requirements=("six",))
    with caplog.at_level(logging.ERROR):
        failed = envs.prepare(spec).failed
    assert failed == "dependencies did not install: ValueError: embedded null byte", failed
    assert envs.status(spec)["dependencies"] == "failed"
    assert "m: planning its venv failed" in caplog.text and "Traceback" in caplog.text
