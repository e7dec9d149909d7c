"""The one place that builds a publisher's envelopes: the SDK's bus for a module's events and the
supervisor for its own (`orchestrator.events`; the supervisor may import the SDK, never the
reverse).

Each publisher names its events `<id prefix><n in hex>`, numbers them per topic from 1 (`seq`,
see `module_sdk.sequence`), stamps them with the time, and refuses one over the bus's
`max_message_size` before it counts it; its syncs tell the subscribers of each topic the last
number it sent there.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import msgpack

from module_sdk.codec import check_size, encode_envelope, encode_sync
from module_sdk.protocol import SYNC_SUFFIX
from module_sdk.sequence import SyncSchedule

PACKER_KEEPS = 256 * 1024  # bytes; after packing a larger event, start a new Packer


class Envelopes:
    """One publisher's numbering and packing. `pack` is not thread-safe: the caller serialises
    it with the send (the SDK under its publish lock), since `seq` must follow the order of the
    sends. `syncs` may run on another thread than `pack`."""

    def __init__(self, source: str, id_prefix: str, max_message_size: int = -1) -> None:
        self.source = source
        self.id_prefix = id_prefix
        self._ids = itertools.count(1)
        self.last_id = ""  # the id of the event `pack` packed last
        self._seqs: dict[bytes, int] = {}  # per topic: the last seq sent
        self._firsts: dict[bytes, float] = {}  # per topic: when seq 1 was sent (syncs say it)
        self._sync_schedule = SyncSchedule()
        self._packer = msgpack.Packer()  # cheaper than a packb per event
        self.max_body = max_message_size if max_message_size >= 0 else sys.maxsize
        self._large = min(self.max_body, PACKER_KEEPS)  # above: a second look at the size

    def pack(self, event_type: str, topic: bytes, data: Any, source: str | None = None) -> bytes:
        """The envelope of the next event on `topic` (`event_type`, encoded), from `source`
        (by default the publisher's own name). Raises TypeError when msgpack cannot carry
        `data`, ValueError when the envelope is over the max message size; either way the
        event is not counted."""
        event_id = f"{self.id_prefix}{next(self._ids):x}"
        seq = self._seqs.get(topic, 0) + 1
        now = time.time()
        body = encode_envelope(
            self.source if source is None else source,
            event_id,
            now,
            data,
            seq,
            packer=self._packer,
        )
        if len(body) > self._large:
            self._check_large(event_type, len(body))
        self._seqs[topic] = seq
        if seq == 1:
            self._firsts[topic] = now
        self.last_id = event_id
        return body

    def _check_large(self, event_type: str, size: int) -> None:
        if size > PACKER_KEEPS:  # a Packer keeps the largest buffer it ever needed
            self._packer = msgpack.Packer()
        check_size(event_type, size, self.max_body)

    def syncs(self) -> list[tuple[bytes, bytes]]:
        """The sync frames `[topic + SYNC_SUFFIX, body]` due now: for each topic published on
        lately (see `SyncSchedule`), the last seq sent there and when its seq 1 was."""
        due = self._sync_schedule.due(self._seqs.copy())  # a copy: pack() may run meanwhile
        if not due:
            return []
        now = time.time()
        return [
            (topic + SYNC_SUFFIX, encode_sync(self.id_prefix, seq, now, self._firsts.get(topic)))
            for topic, seq in due
        ]
