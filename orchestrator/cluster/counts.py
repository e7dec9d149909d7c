"""What the bridge counts, and says of it: the numbers the supervisor shows on the bridge's row.

`exported`, `imported`: events carried out to NATS and in from it. `unsent`: events to export
that NATS did not take (or the bridge's local queue dropped). `refused`: NATS messages that no
bridge sends (events of this host's supervisor, built-in `host.*` events: forgeries or copies).
`bad`: what is not an event at all, dropped: a NATS message that is garbage, holds another
number of events than its `Orch-Batch` header says, or comes on a subject that names no event
type; and a frame of the local bus whose topic an export pattern matches but is no valid event
type (only a ZeroMQ peer that is not the SDK can publish one; as a subject, NATS could refuse it
and close the connection). The first of each kind is said at once, then a count now and then.
"""

from __future__ import annotations

from orchestrator.cluster.bridge_lines import COUNTS, COUNTS_PREFIX, STATE_PREFIX, say
from orchestrator.control import MalformedLog


class Counts:
    """The bridge's counts, and its lines about them (see the module's docstring)."""

    def __init__(self) -> None:
        self.exported = 0
        self.imported = 0
        self.unsent = 0
        self.refused = 0
        self.bad = 0
        self._said: tuple[int, ...] | None = None
        # Anyone on NATS can send them as fast as they like: the log says a few lines a minute.
        self._bad_from_nats = MalformedLog("NATS message")
        self._bad_local = MalformedLog("local frame")

    def values(self) -> tuple[int, ...]:
        """The counts in the order of `bridge_lines.COUNTS`."""
        return tuple(getattr(self, name) for name in COUNTS)

    def report(self) -> None:
        """Say `counts: ...` if they changed since it was last said."""
        counts = self.values()
        if counts != self._said:
            self._said = counts
            say(f"{COUNTS_PREFIX}{' '.join(map(str, counts))}")

    def lost(self, count: int, why: str) -> None:
        """`count` exported events that never reached NATS: counted, and said now and then."""
        first = self.unsent == 0
        self.unsent += count
        if first or self.unsent // 1000 != (self.unsent - count) // 1000:
            say(f"{STATE_PREFIX}{self.unsent} event(s) not sent so far, lost ({why})")

    def refuse(self, what: str) -> None:
        """A message from NATS that no bridge sends: counted, the first one said."""
        self.refused += 1
        if self.refused == 1:
            say(f"warning: refused {what} from NATS (a forgery, or a copy); more are only counted")

    def bad_from_nats(self, why: str) -> None:
        """A message (or an event of a batch) from NATS that is no event, dropped."""
        self.bad += 1
        self._bad_from_nats.add(why)

    def bad_local(self, why: str) -> None:
        """A frame of the local bus that cannot be exported, dropped."""
        self.bad += 1
        self._bad_local.add(why)
