"""The view of the cluster (`status --cluster`) always reaches the supervisor: whatever the table of
hosts holds fits what its control socket takes, and an answer that would not fit goes back as a
failure that says so, not as a message the supervisor drops (the CLI then said "the supervisor
did not answer within 10s")."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from test_peer_table import note

from orchestrator import control
from orchestrator.cluster.hosts import Hosts
from orchestrator.cluster.peers import MAX_ANNOUNCEMENT, MAX_HOSTS, MAX_MODULES, MAX_TABLE_ROWS
from orchestrator.cluster.remote import RemoteControl
from orchestrator.cluster.supervisor_link import SupervisorLink

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


class Link(SupervisorLink):
    """Keeps what would go to the supervisor."""

    def __init__(self) -> None:
        super().__init__(None, "ipc:///nowhere", "k" * 32)  # type: ignore[arg-type]
        self.sent: list[dict[str, Any]] = []

    async def _exchange(self, payload: bytes, timeout: float) -> dict[str, Any]:
        self.sent.append(control.decode(payload, control.REQUEST_LIMITS))
        return {"ok": True, "data": None}


def test_an_answer_too_large_for_the_supervisor_goes_back_as_a_failure_saying_so() -> None:
    link = Link()
    asyncio.run(link.reply(1, {"ok": True, "data": {"hosts": []}}, "the cluster view"))
    huge = {"hosts": [{"modules": [{"name": "m"}] * 100_000}] * 10}  # 1M items
    hosts = SimpleNamespace(view=lambda: huge)
    remote = RemoteControl(name="c", host="alpha", link=link, hosts=hosts, sealer=None)  # type: ignore[arg-type]
    asyncio.run(remote.forward({"forward": 2, "host": None, "request": None}))
    large = {"text": "x" * (control.MAX_REQUEST + 1)}
    asyncio.run(link.reply(3, {"ok": True, "data": large}, "host 'beta''s answer"))
    first, second, third = (message["reply"] for message in link.sent)
    assert first == {"ok": True, "data": {"hosts": []}}
    assert second["ok"] is False and "the cluster view is too large" in second["error"], second
    assert third["ok"] is False and "host 'beta''s answer is too large" in third["error"], third
