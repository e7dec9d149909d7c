"""Sequence numbers: counting the events lost on the way to a subscriber, and the syncs that let
it count those lost at the end of a burst.

Each publisher numbers its events per topic from 1 (`seq`) and names itself by the prefix of its
event ids (up to the last "-": "<pid>-<random>-" for the SDK). A gap between two numbers that
arrive on one topic from one publisher is events that ZeroMQ dropped on the way, a high-water mark
having overflowed. A sync (sent by a publisher that went quiet) says what its last number was.

The first event seen from a publisher on a topic is a baseline: the numbers before it may have
been lost, or sent before this subscriber subscribed. Its syncs say when it sent its first event
there: if that was after we subscribed (with `SUBSCRIBED_SLACK` for the subscription to reach
it, and for clocks), the numbers before the baseline were lost on the way and count too (a host
cut off from the cluster while a publisher elsewhere began a topic, say).

Numbers can be forged by anyone who can write to the bus, so a gap is counted only if the publisher
could have sent that many events in the time between the two (by its own clock, which may not be
ahead of ours), and all gaps together only what could have been sent while this subscriber has
been listening: a larger jump is a bad frame, and leaves the count and the baseline as they were.
Nor can a forged frame hold the baseline against the publisher's real events: a number at or
below the last one seen moves nothing (one forged with seq 1 and a time far ahead made every real
event after it an implausible jump, dropped for good), and the time kept is never ahead of ours.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("module_sdk.bus")

TRACKED = 16384  # (publisher, topic) pairs remembered; beyond, all are forgotten (new baselines)
MAX_RATE = 10_000_000  # events per second on one topic: far beyond what a publisher can send
GAP_SLACK = 10_000  # allowed on top (clock resolution, a small step back of the wall clock)
MAX_WINDOW = 3600.0  # seconds between two events that a gap may be credited with, at most
CLOCK_AHEAD = 60.0  # how far a publisher's clock may be ahead of ours
SUBSCRIBED_SLACK = 2.0  # s: a topic begun this long after we subscribed was meant for us
SYNCS_PER_TICK = 1024


class GapCounter:
    """The sequence state of the publishers this subscriber hears from, and what they lost."""

    def __init__(self) -> None:
        self.dropped = 0
        self._listening_since = time.monotonic()
        self._subscribed_at = time.time()  # since when the subscriptions are what they are
        # Per (publisher prefix, topic): [prefix, last seq, index of the prefix's "-", its time,
        # the numbers before the first one seen (lost, or sent before we subscribed: a sync
        # tells which)]; per topic, the state of the publisher seen last on it.
        self._states: dict[tuple[str, bytes], list[Any]] = {}
        self._by_topic: dict[bytes, list[Any]] = {}

    def event(self, event_id: str, topic: bytes, seq: int, sent: float) -> bool:
        """Account for a numbered event; False if its number is implausible (a bad frame)."""
        state = self._by_topic.get(topic)
        if state is None or event_id.rfind("-") != state[2] or not event_id.startswith(state[0]):
            state = self._state(event_id, topic, seq, sent)
        last = state[1]
        if seq <= last:  # a duplicate, a reordering, or a forgery: the baseline stays
            return True
        if seq > last + 1 and not self._lost(state, seq - last - 1, sent):
            return False
        state[1] = seq
        state[3] = min(sent, time.time())
        return True

    def sync(
        self, prefix: str, topic: bytes, seq: int, sent: float, first: float | None = None
    ) -> bool:
        """Account for a publisher's sync: `seq` is the last number it sent on `topic`, so any
        above the last one seen here were lost; `first`, when it sent seq 1 there, tells whether
        those before the first one seen were meant for us. False if implausible (a bad frame)."""
        state = self._states.get((prefix, topic))
        if state is None:  # nothing seen from it yet: a baseline for its next event
            state = self._state(prefix, topic, seq + 1, sent)
            state[4] = seq  # all of them: lost, or sent before we subscribed
        if state[4] and first is not None:
            before, state[4] = state[4], 0
            if first >= self._subscribed_at + SUBSCRIBED_SLACK and not self._lost(
                state, before, sent, since=first
            ):
                return False
        if seq > state[1]:
            if not self._lost(state, seq - state[1], sent):
                return False
            state[1] = seq
            state[3] = min(sent, time.time())
        return True

    def forget(self) -> None:
        """Forget every publisher (their next events are new baselines and count no gap): the
        subscriptions changed, now."""
        self._states.clear()
        self._by_topic.clear()
        self._subscribed_at = time.time()

    def _state(self, event_id: str, topic: bytes, seq: int, sent: float) -> list[Any]:
        """The state of this event's publisher on `topic`; new (counting no gap) if it is the
        first event seen from it."""
        cut = event_id.rfind("-")
        # An id without "-" names no publisher, so it is a publisher of its own (ids are
        # unique): such events never count a gap.
        prefix = event_id[: cut + 1] if cut >= 0 else event_id
        state = self._states.get((prefix, topic))
        if state is None:
            if len(self._states) >= TRACKED:
                self.forget()
            when = min(sent, time.time())
            state = self._states[(prefix, topic)] = [prefix, seq - 1, cut, when, seq - 1]
        if cut >= 0:
            self._by_topic[topic] = state
        return state

    def _lost(
        self, state: list[Any], missing: int, sent: float, since: float | None = None
    ) -> bool:
        window = min(sent, time.time() + CLOCK_AHEAD) - (state[3] if since is None else since)
        if missing > MAX_RATE * min(max(window, 0.0), MAX_WINDOW) + GAP_SLACK:
            return False
        # All publishers together: a forger with many fresh prefixes, each claiming an old
        # baseline, cannot claim more than could have been sent while this subscriber listened.
        listened = time.monotonic() - self._listening_since + CLOCK_AHEAD
        if self.dropped + missing > MAX_RATE * listened + GAP_SLACK:
            return False
        self.dropped += missing
        if self.dropped == missing:
            log.warning("events were dropped on the way here (a subscriber fell behind)")
        return True


class SyncSchedule:
    """Which topics a publisher tells its last seq on, tick by tick: each topic whose seq changed
    since the last tick, and a quiet topic again 1, 3, 7, 15... ticks after its last event (the
    queue that dropped the end of a burst may still have been full and dropped the sync too;
    however long it takes the subscriber to catch up, a sync follows within as long again)."""

    def __init__(self) -> None:
        self._synced: dict[bytes, tuple[int, int]] = {}  # per topic: (seq synced, ticks since)

    def due(self, seqs: dict[bytes, int]) -> list[tuple[bytes, int]]:
        """The (topic, seq) pairs to sync now, given each topic's last seq sent."""
        due: list[tuple[bytes, int]] = []
        for topic, seq in seqs.items():
            seen = self._synced.get(topic)
            age = 0 if seen is None or seen[0] != seq else seen[1] + 1
            if len(due) >= SYNCS_PER_TICK:
                continue  # (one left out for the limit is due at the next tick)
            self._synced[topic] = (seq, age)
            if age & (age + 1) == 0:  # 0, 1, 3, 7, ...
                due.append((topic, seq))
        return due
