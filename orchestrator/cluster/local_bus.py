"""Small pieces of the bridge's local side: reading what the local bus has queued, and the
events it imported (so that they never go back out)."""

from __future__ import annotations

import time

import zmq

# Imported events awaited back on the local bus, per generation (two are kept): more than can
# be on their way between the bridge's PUB and its SUB with the default high-water marks (a
# flood of 400,000 from NATS then costs no duplicate). 20 MB at most per generation.
RECENT = 262_144
RECENT_FOR = 10.0  # seconds a generation lasts: an import seen back later is exported again
_NOBLOCK = int(zmq.NOBLOCK)


class RecentImports:
    """The events (topic and exact bytes) the bridge published on the local bus, until its own
    SUB sees each come back: those are not exported again. Bounded, and time-limited: an entry
    is forgotten after RECENT_FOR to 2 x RECENT_FOR seconds, or once RECENT newer ones came in;
    one that is forgotten before its event came back costs a duplicate export of that event,
    and nothing else (no publisher is ever judged by it)."""

    def __init__(self, limit: int | None = None, lasts: float = RECENT_FOR) -> None:
        self._new: dict[int, int] = {}  # hash of (topic, body): times it was imported
        self._old: dict[int, int] = {}
        self._limit = RECENT if limit is None else limit
        self._lasts = lasts
        self._since = time.monotonic()

    def tick(self, now: float) -> None:
        """Start a new generation (forgetting the oldest) if the current one is old or full."""
        if now - self._since >= self._lasts or len(self._new) >= self._limit:
            self._old, self._new, self._since = self._new, {}, now

    def add(self, topic: bytes, body: bytes) -> None:
        """An event published on the local bus from NATS."""
        if len(self._new) >= self._limit:
            self.tick(time.monotonic())
        key = hash((topic, body))
        self._new[key] = self._new.get(key, 0) + 1

    def back(self, topic: bytes, body: bytes) -> bool:
        """Whether an event seen on the local bus is one imported (it is then taken off)."""
        if not self._new and not self._old:
            return False
        key = hash((topic, body))
        for generation in (self._old, self._new):
            count = generation.get(key)
            if count is not None:
                if count > 1:
                    generation[key] = count - 1
                else:
                    del generation[key]
                return True
        return False

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


def drain(sock: zmq.Socket[bytes], into: list[list[bytes]], limit: int) -> None:
    """Append the messages already queued on `sock` to `into` (up to `limit` in all), without
    waiting. Reads Frames and their `more` flag, which pyzmq fills in C: recv_multipart asks
    through getsockopt(RCVMORE), whose Python-level lookup costs more than the reads (as
    module_sdk.bus does)."""
    recv = sock.recv
    while len(into) < limit:
        try:
            frame = recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return
        frames = [frame.bytes]
        while frame.more:  # a message arrives whole: the rest of it is here
            frame = recv(copy=False)
            frames.append(frame.bytes)
        into.append(frames)


def publisher_prefix(event_id: str) -> str:
    """A publisher's id prefix (up to the last `-`), as module_sdk.sequence names publishers."""
    return event_id[: event_id.rfind("-") + 1] or event_id
