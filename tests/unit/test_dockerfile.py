"""The Dockerfile: what it must hold to run the supervisor well in a container. Built and run
where a container engine answers; otherwise checked as text (and said so)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_it_runs_the_supervisor_as_a_user_with_a_health_check_and_sigterm() -> None:
    steps = instructions()
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and "python:3.1" in steps[0][1] and "slim" in steps[0][1]
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    assert ("STOPSIGNAL", "SIGTERM") in steps
    health = next(args for kind, args in steps if kind == "HEALTHCHECK")
    assert health.endswith('CMD ["orchestrator", "status"]'), health
    assert steps[-1] == ("CMD", '["orchestrator", "up"]')
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")


def test_what_it_copies_exists_and_the_context_leaves_out_local_state() -> None:
    for kind, args in instructions():
        if kind == "COPY":
            *sources, _ = shlex.split(args)
            for source in sources:
                assert (REPO / source).exists(), source
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "logs/*"} <= set(ignored)


def test_it_builds_where_a_container_engine_answers() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    info = subprocess.run([docker, "info"], capture_output=True, check=False, timeout=20)
    if info.returncode != 0:
        pytest.skip("no container engine answers here (docker info failed)")
    build = subprocess.run(
        [docker, "build", "-q", str(REPO)], capture_output=True, text=True, check=False, timeout=600
    )
    assert build.returncode == 0, build.stderr[-2000:]
