"""Who is in which group, what each member holds unacknowledged, and who gets the next event.

Pure bookkeeping, no sockets: `broker.groups` feeds it what arrives and sends what it returns, so
that the policy (one member per event, least busy first, credit, redelivery, lost counts, every
bound) is tested without processes.

A group is a name and a pattern: members are the connections that joined with both. Each event
whose type matches goes to one member: the one with the fewest events unacknowledged, ties taken
in turn, never one at its credit (its bound on events in flight). Without a member with room, the
event waits in the group's queue (bounded: past it, `overflow` counts it). A member that goes away
with events unacknowledged loses them: each is counted `lost`, or, when the member joined with
redelivery, put back at the head of the queue for another member (`redelivered`). A poison event
(one whose callback crashes or hangs every member it reaches) is not redelivered without end: the
oldest event a member held when it failed (not when it said goodbye), in any of its groups, is
the one its callback was running, and is counted against; at MAX_FAILURES it is dropped,
counted `dead` and logged.

A group whose last member leaves stays in the table for its counters. If a member of it ever
joined with redelivery, it keeps queueing (bounded) for the next member, a restarted one say;
otherwise it stops receiving and what was queued is counted `lost`. When the table is full, a new
group takes the place of one without members: one that stopped receiving if any, else the one
that has been without members longest (what it queued is counted `lost`, and logged).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

from broker.group_names import JoinRefusedError, check_join, matches, zmq_prefix
from broker.group_state import Delivery, Group, Held, Membership

MAX_PATTERNS_PER_MEMBER = 32
MAX_MEMBERS_PER_GROUP = 256
MAX_GROUPS = 1024
# Seconds a group kept from the last broker counts as kept without a member: past them, one whose
# members never came back (their module removed) is not kept by the next broker.
KEPT_GRACE = 30.0
MAX_MEMBERS = 4096  # connections in any group
MAX_CREDIT = 256
MAX_QUEUED = 100_000  # events per group waiting for a member with room (the bus's default HWM)
MAX_QUEUED_BYTES = 128 * 1024 * 1024  # events waiting, all groups together (see `_size`)
MAX_FAILURES = 3  # members that failed running one event: past this it is poison, dropped
_OVERHEAD = 64  # bytes an event costs queued besides its frames, at least (a tuple, bytes headers)
_ROUTE_CACHE = 4096

log = logging.getLogger(__name__)


class GroupTable:
    """Every group and member of one broker. Not thread-safe: one thread (the dispatcher) owns it."""

    def __init__(
        self, max_queued: int = MAX_QUEUED, max_queued_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self.groups: dict[tuple[bytes, bytes], Group] = {}
        self.members: dict[bytes, dict[tuple[bytes, bytes], Membership]] = {}
        self._tags: dict[bytes, Membership] = {}
        # Random, not 1: a member's acks to a broker before a restart must not match new tags.
        # (os.urandom, not `secrets`: that imports hmac and OpenSSL, ~3.5 MB in every broker)
        self._next_tag = itertools.count(int.from_bytes(os.urandom(8), "big") >> 1)
        self._clock = itertools.count(1)
        self._evicted: list[bytes] = []
        self._routes: dict[bytes, tuple[Group, ...]] = {}
        self._max_queued = max_queued
        self._max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0

    # -- membership ----------------------------------------------------------------------

    def join(
        self, member: bytes, name: bytes, pattern: bytes, credit: int, redeliver: bool
    ) -> bytes | None:
        """Add `member` to the group (or update its credit); returns the SUB prefix to subscribe
        when the group starts receiving, else None. Raises JoinRefusedError past a bound or for bad names."""
        check_join(name, pattern)
        key = (name, pattern)
        credit = max(1, min(credit, MAX_CREDIT))
        joined = self.members.get(member)
        if joined is not None and key in joined:
            current = joined[key]
            current.credit, current.redeliver = credit, redeliver
            current.group.keeps |= redeliver
            return None
        if joined is None and len(self.members) >= MAX_MEMBERS:
            raise JoinRefusedError(f"the broker has {MAX_MEMBERS} group members already")
        if joined is not None and len(joined) >= MAX_PATTERNS_PER_MEMBER:
            raise JoinRefusedError(f"a member may join at most {MAX_PATTERNS_PER_MEMBER} groups")
        group = self.groups.get(key) or self._new_group(name, pattern)
        if len(group.members) >= MAX_MEMBERS_PER_GROUP:
            raise JoinRefusedError(
                f"group {name.decode()!r} has {MAX_MEMBERS_PER_GROUP} members already"
            )
        membership = Membership(member, group, credit, redeliver)
        group.members.append(membership)
        group.keeps |= redeliver
        self.members.setdefault(member, {})[key] = membership
        if group.subscribed:
            return None
        group.subscribed = True
        self._routes.clear()
        return zmq_prefix(pattern)

    def keep(self, name: bytes, pattern: bytes) -> bytes | None:
        """Make a redelivering group without members (one the last broker had, before its
        restart), so that it queues its events for the members that join; returns the SUB
        prefix to subscribe, as `join` does. Raises JoinRefusedError as `join` does."""
        check_join(name, pattern)
        group = self.groups.get((name, pattern)) or self._new_group(name, pattern)
        group.keeps = True
        group.kept_until = time.monotonic() + KEPT_GRACE
        if group.subscribed:
            return None
        group.subscribed = True
        group.idle_since = next(self._clock)
        self._routes.clear()
        return zmq_prefix(pattern)

    def _new_group(self, name: bytes, pattern: bytes) -> Group:
        if len(self.groups) >= MAX_GROUPS:
            self._evict()
        group = self.groups[(name, pattern)] = Group(name, pattern)
        return group

    def _evict(self) -> None:
        """Make room: forget a group nobody is in (its counters, and what it kept queued)."""
        idle = next((k for k, g in self.groups.items() if not g.subscribed), None)
        if idle is None:
            empty = [(g.idle_since, k) for k, g in self.groups.items() if not g.members]
            if not empty:
                raise JoinRefusedError(f"the broker has {MAX_GROUPS} groups already")
            idle = min(empty)[1]
            group = self.groups[idle]
            if group.queue:
                log.warning(
                    "group %s (%s) forgotten for a new one, without a member for long: %d queued"
                    " event(s) lost",
                    group.name.decode(),
                    group.pattern.decode(),
                    len(group.queue),
                )
            group.lost += len(group.queue)
            self._clear(group)
            self._routes.clear()
            self._evicted.append(zmq_prefix(group.pattern))
        del self.groups[idle]

    def evicted(self) -> list[bytes]:
        """The SUB prefixes to drop for groups forgotten (by joins) since the last call."""
        gone, self._evicted = self._evicted, []
        return gone

    def leave(self, member: bytes, name: bytes, pattern: bytes) -> bytes | None:
        """Take `member` out of one group; returns the SUB prefix to drop if the group is gone."""
        joined = self.members.get(member)
        membership = joined.pop((name, pattern), None) if joined is not None else None
        if membership is None:
            return None
        if not joined:
            del self.members[member]
        return self._remove(membership)

    def drop(
        self, member: bytes, *, failed: bool = True, unsent: bytes | None = None
    ) -> list[bytes]:
        """`member` is gone: take it out of every group; returns the SUB prefixes to drop.
        `failed`: it crashed, hung or stopped reading (not a goodbye), so the oldest event it
        held, in any of its groups, counts towards MAX_FAILURES: acks go out as each event is
        done, in order, so that is the one its callback was running. `unsent`: the tag whose
        send found it gone; that one and those after it never reached it."""
        joined = self.members.pop(member, {})
        held = [tag for membership in joined.values() for tag in membership.in_flight]
        # Tags count up from one counter, 8 bytes big-endian: the least is the oldest.
        delivered = [tag for tag in held if unsent is None or tag < unsent]
        blamed = min(delivered) if failed and delivered else None
        gone = [self._remove(membership, blamed) for membership in joined.values()]
        return [prefix for prefix in gone if prefix is not None]

    def _remove(self, membership: Membership, blamed: bytes | None = None) -> bytes | None:
        group = membership.group
        group.members.remove(membership)
        if not group.members:
            group.idle_since = next(self._clock)
        # Newest first onto the head of the queue: the oldest ends up first, as it was sent.
        for tag, held in reversed(list(membership.in_flight.items())):
            del self._tags[tag]
            if membership.redeliver:
                self._give_back(group, held, blamed=tag == blamed)
            else:
                group.lost += 1
        membership.in_flight.clear()
        self._trim(group)
        if group.members or group.keeps or not group.subscribed:
            return None
        group.lost += len(group.queue)  # cannot be: without `keeps` nothing was requeued
        self._clear(group)
        group.subscribed = False
        self._routes.clear()
        return zmq_prefix(group.pattern)

    def _give_back(self, group: Group, held: Held, *, blamed: bool) -> None:
        """Redeliver an event a member held; one `blamed` for the member's failure MAX_FAILURES
        times is poison: dropped, counted `dead` and logged."""
        topic, body, failures = held
        failures += blamed
        if failures >= MAX_FAILURES:
            group.dead += 1
            log.warning(
                "group %s (%s): an event %s (%d bytes) was running when %d members failed:"
                " dropped as poison, not redelivered (counted dead)",
                group.name.decode(),
                group.pattern.decode(),
                topic.decode(errors="replace"),
                len(body),
                failures,
            )
            return
        group.redelivered += 1
        self._add(group, topic, body, failures, front=True)

    def _trim(self, group: Group) -> None:
        """After events were put back at the head of `group`'s queue: within its count, and
        within the bytes of all groups, taken from larger groups first (as `_enqueue` does),
        else from its own newest."""
        while len(group.queue) > self._max_queued:
            self._take(group, front=False)
            group.overflow += 1
        if not self._make_room(group, 0):
            while group.queue and self.queued_bytes > self._max_queued_bytes:
                self._take(group, front=False)
                group.overflow += 1

    # -- events --------------------------------------------------------------------------

    def route(self, topic: bytes, body: bytes) -> list[Delivery]:
        """The deliveries for one event from the bus (none if no group matches)."""
        groups = self._routes.get(topic)
        if groups is None:
            groups = tuple(
                g for g in self.groups.values() if g.subscribed and matches(g.pattern, topic)
            )
            if len(self._routes) < _ROUTE_CACHE:
                self._routes[topic] = groups
        out: list[Delivery] = []
        for group in groups:
            if group.queue:  # others wait already: keep the order
                self._enqueue(group, topic, body)
                continue
            membership = self._pick(group)
            if membership is None:
                self._enqueue(group, topic, body)
            else:
                out.append(self._send(membership, topic, body))
        return out

    def ack(self, member: bytes, tag: bytes) -> list[Delivery]:
        """`member` is done with `tag`; returns what may now go out of its group's queue.
        An unknown tag (a member's ack to a broker before a restart) is ignored."""
        membership = self._tags.get(tag)
        if membership is None or membership.member != member:
            return []
        del self._tags[tag]
        del membership.in_flight[tag]
        membership.group.acked += 1
        return self.pump(membership.group)

    def pump(self, group: Group) -> list[Delivery]:
        """Send queued events of `group` to members with room."""
        out: list[Delivery] = []
        while group.queue:
            membership = self._pick(group)
            if membership is None:
                break
            out.append(self._send(membership, *self._take(group)))
        return out

    def pump_all(self) -> list[Delivery]:
        """`pump` every group (after members joined or left)."""
        return [d for group in list(self.groups.values()) if group.queue for d in self.pump(group)]

    def _enqueue(self, group: Group, topic: bytes, body: bytes) -> None:
        """Queue an event for `group`. When the groups together hold all they may, the group
        holding the most gives way, its oldest first: a group nobody takes events from (a
        hostile module's, joined with redelivery then gone) cannot starve the others."""
        size = _size(topic, body)
        if len(group.queue) >= self._max_queued or not self._make_room(group, size):
            group.overflow += 1
            return
        self._add(group, topic, body)

    def _make_room(self, group: Group, size: int) -> bool:
        """Room for `size` more bytes in `group`, taken from the groups holding more than it
        then would (the largest first, oldest events first); False, and nothing taken, if
        there is not enough to take."""
        need = self.queued_bytes + size - self._max_queued_bytes
        if need <= 0:
            return True
        after = group.bytes + size
        larger = sorted(
            (g for g in self.groups.values() if g is not group and g.bytes > after),
            key=lambda g: g.bytes,
            reverse=True,
        )
        if sum(g.bytes - after for g in larger) < need:
            return False
        for other in larger:
            while need > 0 and other.queue and other.bytes > after:
                need -= _size(*self._take(other)[:2])
                other.overflow += 1
            if need <= 0:
                break
        return need <= 0

    def _add(
        self, group: Group, topic: bytes, body: bytes, failures: int = 0, *, front: bool = False
    ) -> None:
        (group.queue.appendleft if front else group.queue.append)((topic, body, failures))
        size = _size(topic, body)
        group.bytes += size
        self.queued_bytes += size

    def _take(self, group: Group, *, front: bool = True) -> Held:
        held = group.queue.popleft() if front else group.queue.pop()
        size = _size(held[0], held[1])
        group.bytes -= size
        self.queued_bytes -= size
        return held

    def _clear(self, group: Group) -> None:
        self.queued_bytes -= group.bytes
        group.bytes = 0
        group.queue.clear()

    def _pick(self, group: Group) -> Membership | None:
        """The member with the most room left, ties taken in turn; None if all are full."""
        members = group.members
        count = len(members)
        if not count:
            return None
        best: Membership | None = None
        best_load = 0
        start = group.turn
        for offset in range(count):
            candidate = members[(start + offset) % count]
            load = len(candidate.in_flight)
            if load < candidate.credit and (best is None or load < best_load):
                best, best_load = candidate, load
                if load == 0:
                    break
        if best is not None:
            group.turn = (members.index(best) + 1) % count
        return best

    def _send(
        self, membership: Membership, topic: bytes, body: bytes, failures: int = 0
    ) -> Delivery:
        tag = next(self._next_tag).to_bytes(8, "big")
        membership.in_flight[tag] = (topic, body, failures)
        membership.delivered += 1
        membership.group.delivered += 1
        self._tags[tag] = membership
        group = membership.group
        return (membership.member, tag, group.name, group.pattern, topic, body)

    def stats(self) -> list[dict[str, Any]]:
        """Each group's counters, in a stable order."""
        return [self.groups[key].stats() for key in sorted(self.groups)]


def _size(topic: bytes, body: bytes) -> int:
    """What one queued event counts against MAX_QUEUED_BYTES: empty bodies are not free."""
    return len(topic) + len(body) + _OVERHEAD
