"""`up -d` and slow venv builds: it waits as long as the builds' own limits allow, and when it
gives up while the supervisor still answers, it says what is still being built."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.cli import up
from orchestrator.venv.environments import BUILD_TIMEOUT, MAX_BUILDS


def config(own: int, plain: int = 1) -> Any:
    modules = [SimpleNamespace(own_environment=True)] * own
    return SimpleNamespace(
        enabled_modules=modules + [SimpleNamespace(own_environment=False)] * plain
    )


def test_the_wait_covers_the_builders_own_step_limit() -> None:
    """It was 600 s against the builder's 900 s per step: `up -d` could never see the outcome."""
    assert up.install_wait(config(0)) == 0.0
    assert up.install_wait(config(1)) > BUILD_TIMEOUT
    assert up.install_wait(config(MAX_BUILDS + 1)) > 2 * BUILD_TIMEOUT  # a second round queues


def test_giving_up_on_a_build_says_it_is_still_installing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"name": "hp2", "dependencies": "installing"},
        {"name": "plain", "dependencies": None},
    ]

    class Client:
        def __init__(self, run_dir: object) -> None:
            pass

        def request(self, cmd: str, wait: float) -> dict[str, Any]:
            assert cmd == "status"
            return {"modules": rows}

    monkeypatch.setattr(up, "ControlClient", Client)
    with pytest.raises(SystemExit) as exited:
        up._still_installing(SimpleNamespace(run_dir=None), 1860.0)  # type: ignore[arg-type]
    assert exited.value.code == 1
    said = capsys.readouterr().err
    assert "hp2: still installing dependencies after 31 min" in said, said
    assert "did not answer" not in said
    rows[0]["dependencies"] = "ready"  # nothing builds: the caller says what it would have said
    up._still_installing(SimpleNamespace(run_dir=None), 1860.0)  # type: ignore[arg-type]
