"""Hosts see each other: the bridge announces its host, hears the others, and says who joined,
was lost or left (`host: joined NAME`, `host: lost NAME <why>`, `host: left NAME <why>`,
`host: twin NAME <pid>` lines on stdout, which the supervisor turns into `host.*` events), and
which it forgot (`host: forgot NAME <why>`, no event).

Announcements are signed with the cluster's key (see `signing`): another NATS client cannot
make a host look gone, or fill the table with hosts that are not. The announcement carries the
supervisor's own `status` (asked over the control socket every
`ANNOUNCE_EVERY` seconds), cut to the fields other hosts show: pid, version, modules and states.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from orchestrator import __version__
from orchestrator.cluster.bridge_lines import HOST_PREFIX
from orchestrator.cluster.peers import (
    ANNOUNCE_EVERY,
    MAX_ANNOUNCEMENT,
    UP,
    BadAnnouncementError,
    PeerTable,
    decode_announcement,
    encode_announcement,
)
from orchestrator.cluster.signing import RefusedError, Sealer
from orchestrator.cluster.subjects import host_subject
from orchestrator.cluster.supervisor_link import SupervisorLink

log = logging.getLogger(__name__)

_STATUS_TIMEOUT = 2.0  # seconds the supervisor may take to give its status
_LEAVE_TIMEOUT = 0.5  # seconds the goodbye may take to reach NATS, at stop


class Hosts:
    """This host's announcements, and the table of the others."""

    def __init__(
        self,
        *,
        name: str,
        host: str,
        instance: str,
        link: SupervisorLink,
        sealer: Sealer,
        say: Callable[[str], None],
    ) -> None:
        self.name = name
        self.host = host
        self.instance = instance
        self.table = PeerTable(host, instance)
        self._link = link
        self._sealer = sealer
        self._say = say
        self._nc: Client | None = None
        self._seq = 0  # of this run's announcements: the others ignore one not after the last
        self.status: dict[str, Any] | None = None  # the supervisor's, as last asked

    async def connected(self, nc: Client) -> None:
        """NATS is there: hear the others, and announce this host at once."""
        self._nc = nc
        await nc.subscribe(host_subject(self.name, ">"), cb=self.heard)
        await self._announce()

    async def run(self) -> None:
        """Ask the supervisor's status, announce it, and expire silent hosts, every
        ANNOUNCE_EVERY seconds, until cancelled."""
        while True:
            # Without RSS and CPU: sampling every module's memory would cost the loop dearly,
            # every second.
            answer = await self._link.ask({"cmd": "status", "sample": False}, _STATUS_TIMEOUT)
            if answer.get("ok") and isinstance(answer.get("data"), dict):
                self.status = answer["data"]
            await self._announce()
            self._changed(self.table.expire(time.time()))
            await asyncio.sleep(ANNOUNCE_EVERY)

    async def heard(self, msg: Msg) -> None:
        """An announcement (ours among them: no_echo does not hold for every server setup)."""
        try:
            note = decode_announcement(self._sealer.verify(msg.data, MAX_ANNOUNCEMENT))
        except (BadAnnouncementError, RefusedError) as exc:
            log.debug("bridge: ignored an announcement on %s: %s", msg.subject, exc)
            return
        if msg.subject != host_subject(self.name, note["host"]):
            return  # a host speaks only for itself
        self._changed(self.table.heard(note, time.time()))

    async def leave(self) -> None:
        """Say goodbye (the others show this host as `left` at once, not lost seconds later)."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            return
        with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
            await nc.publish(host_subject(self.name, self.host), self._encode(leaving=True))
            await asyncio.wait_for(nc.flush(), _LEAVE_TIMEOUT)

    def view(self) -> dict[str, Any]:
        """What `status --cluster` shows of the cluster, but this host's own row: the
        supervisor puts a fresh one first."""
        now = time.time()
        return {
            "cluster": self.name,
            "host": self.host,
            "connected": self._nc is not None and self._nc.is_connected,
            "hosts": self.table.rows(now),
            "twins": len(self.table.twins),  # other bridge runs heard under this host's name
        }

    def reachable(self) -> list[str]:
        """The other hosts heard of lately."""
        return [host for host, peer in self.table.peers.items() if peer.state == UP]

    async def _announce(self) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.publish(host_subject(self.name, self.host), self._encode())

    def _encode(self, *, leaving: bool = False) -> bytes:
        self._seq += 1
        note = encode_announcement(
            host=self.host,
            instance=self.instance,
            status=self.status,
            version=__version__,
            seq=self._seq,
            leaving=leaving,
        )
        return self._sealer.sign(note)

    def _changed(self, changes: list[tuple[str, str, str]]) -> None:
        for change, host, why in changes:
            self._say(f"{HOST_PREFIX}{change} {host} {why}".rstrip())
