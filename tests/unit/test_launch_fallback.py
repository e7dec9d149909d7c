"""processes.launch_modules: a module whose fork failed is spawned instead, under a routing id of
its own. The fork may have happened all the same (the template's intermediate killed before it
answered): that process holds the first id, and the channel gave the spawned one's messages to
nobody (it waited for its spec, then exited 73, counted as a crash)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from module_sdk import protocol
from orchestrator import processes
from orchestrator.config import ModuleSpec
from orchestrator.forkserver import ForkServerError
from orchestrator.processes import Launch, ModuleProcess, launch_modules, module_env


class _LostForks:
    """A fork server whose every fork failed after the fact (timed out)."""

    def fork_many(self, requests: list[Any]) -> list[ForkServerError]:
        return [ForkServerError("timed out") for _ in requests]


def test_a_module_whose_fork_failed_is_spawned_under_a_new_routing_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: dict[str, Mapping[str, str]] = {}

    def spawn(name: str, cwd: Path, env: Mapping[str, str], *_: Any) -> ModuleProcess:
        spawned[name] = env
        return ModuleProcess(4242, io.BytesIO())

    monkeypatch.setattr(processes, "spawn_module", spawn)
    env = module_env("m", "ipc:///nowhere", {}, lifeline=0)
    launch = Launch(ModuleSpec(name="m", path=tmp_path / "m.py"), env, tmp_path)
    assert launch.forks
    (result,) = launch_modules([launch], 0, _LostForks())  # type: ignore[arg-type]
    assert isinstance(result, ModuleProcess)
    first, used = env[protocol.ENV_CHANNEL_ID], spawned["m"][protocol.ENV_CHANNEL_ID]
    assert used != first and used.startswith("m:")
    assert result.channel_id == used.encode()  # what the channel expects it to speak with
