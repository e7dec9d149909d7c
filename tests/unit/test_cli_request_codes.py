"""How the CLI turns a supervisor's failure answer into an exit code: only the supervisor's
own `kind: usage` is bad usage (2); a module removed while the request was under way is a
failed operation (1), however the timing fell."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator import exit_codes
from orchestrator.cli.common import App
from orchestrator.control import ControlError


def _app(tmp_path: Path, failure: ControlError) -> App:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "modules.yaml").write_text("modules: []\n")
    app = App(tmp_path / "config")

    def request(cmd: str, wait: float = 10.0, **arguments: Any) -> Any:
        if cmd == "status":
            return {"modules": []}  # the reload took it out: no longer there
        raise failure

    app.__dict__["run_dir"] = SimpleNamespace(running_pid=lambda: 1234)  # a supervisor runs
    app.client = lambda: SimpleNamespace(request=request)  # type: ignore[method-assign,assignment,return-value]
    return app


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (ControlError("web was removed meanwhile: a reload took it out"), exit_codes.FAILED),
        (ControlError("no enabled module named 'web'", {"kind": "usage"}), exit_codes.USAGE),
    ],
)
def test_only_the_supervisors_usage_answer_is_bad_usage(
    tmp_path: Path, failure: ControlError, code: int
) -> None:
    with pytest.raises(SystemExit) as exited:
        _app(tmp_path, failure).request("restart", name="web")
    assert exited.value.code == code
