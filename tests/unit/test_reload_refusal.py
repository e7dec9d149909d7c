"""A reload whose reading of the config raises something other than a ConfigError (a defect of
ours, on a value nobody foresaw) is refused like an invalid config: it never ends the supervisor,
and what it says names where it failed, never the text of the error (a new secret the redactor
does not know yet may be in it)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from orchestrator import supervisor_reload
from orchestrator.config import Redactor
from orchestrator.supervisor_reload import ConfigReload


class _HotReload:
    rejected = False

    def config_state(self) -> object:
        return "state"

    def config_read(self, seen: object) -> None:
        self.seen = seen


def test_an_unforeseen_error_in_reading_the_config_is_a_rejected_reload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def load_config(config_dir: Path) -> Any:
        raise ValueError("the value was hunter2-new-secret")

    monkeypatch.setattr(supervisor_reload, "load_config", load_config)
    reload = ConfigReload()
    reload.config = cast(Any, SimpleNamespace(config_dir=Path("config")))
    reload.redactor = Redactor(())
    reload.hot_reload = cast(Any, _HotReload())
    reload.rejected_config = None

    plan, message = reload.reload(dry_run=False)

    assert plan is None
    assert message.startswith("cannot read the config (ValueError at test_reload_refusal.py:")
    assert "hunter2" not in message
    assert reload.rejected_config is not None and reload.rejected_config[0] == message
    assert reload.hot_reload.rejected
