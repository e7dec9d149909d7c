"""Small pieces of the bridge's local side: reading what the local bus has queued, and the
publishers it imported events from (so that their events never go back out)."""

from __future__ import annotations

from collections import OrderedDict

import zmq

REMEMBERED = 65_536  # publisher prefixes of imported events kept to recognise them
_NOBLOCK = int(zmq.NOBLOCK)


class Remembered:
    """A set that forgets its least recently added members past `limit`."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit
        self._last = ""  # the last key added: a burst adds one key over and over

    def add(self, key: str) -> None:
        if key == self._last:
            return
        self._last = key
        self._items[key] = None
        self._items.move_to_end(key)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._items


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
