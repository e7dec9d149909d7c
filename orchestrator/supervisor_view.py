"""What the control handler sees of the supervisor (`supervisor_port`), and what `status --json`
shows of the supervisor itself (`overview`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.control_port import SupervisorPort
from orchestrator.resources import own_usage

if TYPE_CHECKING:
    from orchestrator.supervisor import Supervisor


def supervisor_port(sup: Supervisor) -> SupervisorPort:
    """What the control handler may use of the supervisor."""
    return SupervisorPort(
        manager=sup.manager,
        forwarder=sup.forwarder,
        send_reply=sup.send_reply,
        wait_for=sup.wait_for,
        reload=lambda dry_run: sup.reload(dry_run=dry_run),
        overview=lambda: overview(sup),
        config=lambda: sup.config,
        logs=Path(sup.config.logging.directory),  # (called once, at the start)
        bus_client=lambda: sup.bus_keys.client() if sup.bus_keys is not None else None,
        events=lambda: sup.events,
        current_bridge=lambda: sup.bridge,
    )


def overview(sup: Supervisor) -> dict[str, Any]:
    """What `status --json` shows of the supervisor itself: it, the bus, its own processes,
    and a reload's rejection (until a config is applied)."""
    rejected = sup.rejected_config
    return {
        "supervisor": {
            "pid": os.getpid(),
            "started": sup.started_wall,
            "uptime": round(time.time() - sup.started_wall, 3),
            "config": str(sup.config.config_dir),
            "shutting_down": sup.manager.shutting_down,
            **own_usage(),
        },
        "bus": {
            "xsub": sup.xsub,
            "xpub": sup.xpub,
            "groups_endpoint": sup.groups,
            "transport": sup.config.bus.transport,
            **sup.broker.bus_status(),
        },
        "system": [helper.status() for helper in sup.helpers],
        "config": {
            "rejected": rejected[0] if rejected else None,
            "since": rejected[1] if rejected else None,
        },
        "webhooks": sup.notifier.stats(),
        "metrics": sup.metrics.status(),
    }
