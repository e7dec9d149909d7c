"""What the group table holds: a group with its queue and counters, each member's place in it,
and the shape of an event held or handed out (the policy is `broker.group_table`'s)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

Delivery = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
"""(member routing id, tag, group name, pattern, topic, body): one event for one member."""
Held = tuple[bytes, bytes, int]
"""(topic, body, failures): an event queued or in flight, and how many members failed running it."""


@dataclass(eq=False)
class Membership:
    """One connection's place in one group."""

    member: bytes
    group: Group
    credit: int
    redeliver: bool
    in_flight: dict[bytes, Held] = field(default_factory=dict)
    delivered: int = 0


@dataclass(eq=False)
class Group:
    """The members of one (name, pattern) and its counters."""

    name: bytes
    pattern: bytes
    members: list[Membership] = field(default_factory=list)
    queue: deque[Held] = field(default_factory=deque)
    turn: int = 0
    subscribed: bool = False  # the dispatcher's SUB lets this group's events through
    keeps: bool = False  # a member joined with redelivery: queue while there is none
    delivered: int = 0
    acked: int = 0
    redelivered: int = 0
    lost: int = 0
    overflow: int = 0
    dead: int = 0  # poison events dropped (see `GroupTable.drop`)
    idle_since: int = 0  # when (a `GroupTable` tick) its last member left
    bytes: int = 0  # of its queue, as `_size` counts them
    kept_until: float = 0.0  # (monotonic) kept from the last broker: its members may come back

    def stats(self) -> dict[str, Any]:
        """The group's counters, for the broker's status line."""
        return {
            "group": self.name.decode(),
            "pattern": self.pattern.decode(),
            "members": len(self.members),
            "delivered": self.delivered,
            "acked": self.acked,
            "redelivered": self.redelivered,
            "lost": self.lost,
            "overflow": self.overflow,
            "dead": self.dead,
            "queued": len(self.queue),
            "in_flight": sum(len(m.in_flight) for m in self.members),
            "per_member": [m.delivered for m in self.members],  # in the order they joined
            "redeliver": self.keeps,  # kept by a restarted broker (see `GroupTable.keep`)
            # Still to be kept by the next broker, though no member is back yet (a crash loop
            # of brokers must not forget it); no longer once that grace has passed.
            "kept": not self.members and time.monotonic() < self.kept_until,
        }
