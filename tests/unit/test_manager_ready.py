"""A module that could not join its cgroup is marked so that its strays are swept another way."""

from __future__ import annotations

from pathlib import Path

import zmq

from orchestrator.child import ManagedChild
from orchestrator.config import AppConfig, LoggingSection, ModuleSpec, Redactor
from orchestrator.forkserver import ForkServer
from orchestrator.manager import ChildManager
from orchestrator.output import ModuleLog
from orchestrator.resources import Limits
from orchestrator.states import ChildState


class FakeCgroups:
    def available(self) -> bool:
        return True


def _manager(tmp_path: Path) -> ChildManager:
    config = AppConfig(
        config_dir=tmp_path, main_file=tmp_path / "main.yaml", modules_file=tmp_path / "m.yaml"
    )
    return ChildManager(
        config,
        Limits(max_processes=4, max_threads=4, available_mb=1, total_mb=1, cpu_count=1),
        redactor=Redactor(()),
        cgroups=FakeCgroups(),  # type: ignore[arg-type]
        channel_endpoint="ipc://unused",
        lifeline=-1,
        forkserver=ForkServer(-1),
        poller=zmq.Poller(),
        publish=lambda *args, **kwargs: None,
        foreground=False,
    )


def _starting(tmp_path: Path) -> ManagedChild:
    spec = ModuleSpec(name="m", path=tmp_path / "m.py")
    log = ModuleLog("m", LoggingSection(directory=tmp_path), Redactor(()), echo=False)
    return ManagedChild(spec, log, state=ChildState.STARTING)


def test_a_module_outside_its_cgroup_is_marked_uncontained(tmp_path: Path) -> None:
    manager, child = _manager(tmp_path), _starting(tmp_path)
    manager.ready(child, contained=False)
    assert child.state is ChildState.RUNNING and child.uncontained


def test_a_module_inside_its_cgroup_is_not(tmp_path: Path) -> None:
    manager, child = _manager(tmp_path), _starting(tmp_path)
    manager.ready(child, contained=True)
    assert child.state is ChildState.RUNNING and not child.uncontained
