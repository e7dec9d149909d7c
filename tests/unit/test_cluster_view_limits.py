"""The view of the cluster (`status --cluster`) always reaches the supervisor: whatever the table of
hosts holds fits what its control socket takes (a view it dropped made the CLI say "the
supervisor did not answer within 10s")."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from test_peer_table import note

from orchestrator import control
from orchestrator.cluster.hosts import Hosts
from orchestrator.cluster.peers import MAX_ANNOUNCEMENT, MAX_HOSTS, MAX_MODULES, MAX_TABLE_ROWS

WIDE = "\U0001d54f" * 200  # 200 characters of 4 bytes: the longest text a row keeps


def bridge_reply(answer: dict[str, Any]) -> bytes:
    """What the bridge sends the supervisor for a forwarded request (see SupervisorLink.reply)."""
    return msgpack.packb({"cmd": "bridge_reply", "key": "k" * 32, "id": 1, "reply": answer})  # type: ignore[no-any-return]


def full_table(hosts: int, rows: list[dict[str, Any]], version: str = "1", tail: str = "") -> Hosts:
    """Hosts whose table heard `hosts` hosts of `rows` each (as many as it holds), then hosts
    without modules up to MAX_HOSTS; `version` and `tail` (of host names) as long as given."""
    view = Hosts(name="c", host="alpha", instance="me", link=None, sealer=None, say=print)  # type: ignore[arg-type]
    for i in range(MAX_HOSTS):
        modules = rows if i < hosts else []
        status = {"supervisor": {"pid": 7, "started": 1.0}, "modules": modules}
        announcement = note(f"h{i:03}{tail}", f"i{i}", status=status, sent=1.0)
        view.table.heard({**announcement, "version": version}, 1.0)
    return view


@pytest.mark.parametrize(
    "table",
    [
        # The sweep's: 200 hosts of 2,000 minimal rows, 3.2 MB received, a view of 20 MB.
        lambda: full_table(200, [{"name": "m"}] * MAX_MODULES),
        # As many items as there can be: the most rows, and as many hosts more.
        lambda: full_table(
            MAX_TABLE_ROWS // MAX_MODULES, [{"name": "m", "pid": 1, "restarts": 2}] * MAX_MODULES
        ),
        # As many bytes as there can be: texts of 4-byte characters, long host names.
        lambda: full_table(
            MAX_HOSTS,
            [{"name": WIDE, "state": WIDE, "why": WIDE, "pid": 1.5, "uptime": 1e9}]
            * (MAX_ANNOUNCEMENT // 2600),
            version=WIDE,
            tail="x" * 240,
        ),
    ],
    ids=["the-sweeps", "most-items", "most-bytes"],
)
def test_the_view_of_a_full_table_is_one_the_supervisor_takes(table: Any) -> None:
    hosts = table()
    view = hosts.view()
    assert view["hosts"], "the table holds hosts"
    control.decode(bridge_reply({"ok": True, "data": view}), control.REQUEST_LIMITS)
