"""The hosts of the cluster as this host sees them, from their announcements (pure logic).

Every bridge announces its host every `ANNOUNCE_EVERY` seconds on `<name>.host.<host>`: its
supervisor's pid, the version, its modules and their states. A host first heard of (or heard
again after it was lost) has *joined*; one not heard of for `LOST_AFTER` seconds is
*unreachable* (lost); one that said goodbye (`down`) has *left*. Announcements come from the
network: each is checked field by field and bounded, and the table holds at most `MAX_HOSTS`,
of `MAX_TABLE_ROWS` module rows and `MAX_TABLE_SIZE` bytes (as the view of the cluster carries
them: see `Hosts.view`) in all, so that the view always fits what the supervisor's control socket
takes (`control.REQUEST_LIMITS`). A host unreachable or gone for `FORGET_AFTER` is forgotten.

Signed announcements can still be recorded and sent again by any client of the NATS server: each
carries the time it was sent and a number its bridge run counts up. One not newer than the last
of its run, from an older run than the last heard, or (from a run not heard yet) older than
`MAX_AGE` is ignored: a replay can neither keep a stopped host up nor make a live one leave. One
sent more than `MAX_AGE` ahead of this host's clock is ignored too, and one a little ahead is
kept as sent now: else, as the last heard, it would hide the host's next run for as long.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from module_sdk.health import bounded_message

ANNOUNCE_EVERY = 1.0  # seconds between a host's announcements
LOST_AFTER = 3.5  # seconds without one, after which a host is unreachable
FORGET_AFTER = 3600.0  # seconds after which a host unreachable (or that left) is forgotten
MAX_HOSTS = 256
MAX_MODULES = 2000  # rows of one announcement
MAX_ANNOUNCEMENT = 512 * 1024  # bytes of one
# What the table holds of all the hosts, an announcement that would not fit being ignored. The
# view of the cluster goes to the supervisor whole (`status --cluster`): its control socket takes
# 17 MiB and 500,000 items (control.REQUEST_LIMITS), and a row is 8 items. Bounded by bytes
# received, 200 hosts of 2,000 minimal rows (3.2 MB) made a view of 20 MB, which the supervisor
# dropped, and 256 of short distinct names took the bridge past its 256 MB memory limit.
MAX_TABLE_ROWS = 50_000
MAX_TABLE_SIZE = 8 * 1024 * 1024  # bytes of the rows and hosts' fields, packed as in the view
_MAX_NUMBER = 1e15  # pids, counts, times and sizes: beyond it, it is not one
# Seconds an announcement of a run not heard yet stays valid: hosts' clocks may differ by this
# much, as for control requests (signing.MAX_AGE; not imported: signing loads hashlib, and with
# it OpenSSL, into the supervisor, which imports this module).
MAX_AGE = 30.0
UP, UNREACHABLE, LEFT = "up", "unreachable", "left"
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")
_TEXT = 200  # characters of a text field kept
MODULE_FIELDS = ("name", "state", "pid", "restarts", "uptime", "rss_mb", "why")
Row = tuple[
    str | None, str | None, float | None, float | None, float | None, float | None, str | None
]
# What a row's field names add to its packed size in the view (a map, not an array of values).
_ROW_KEYS = len(msgpack.packb(dict.fromkeys(MODULE_FIELDS))) - len(
    msgpack.packb([None] * len(MODULE_FIELDS))
)
# What a host's row adds to its modules' in the view, at most: its field names and values, a
# host name of 253 characters and texts of 200 (up to 4 bytes each), and numbers.
_HOST_SIZE = 2048


class BadAnnouncementError(ValueError):
    """An announcement that is not one (garbage, or from a broken peer)."""


def encode_announcement(
    *,
    host: str,
    instance: str,
    status: dict[str, Any] | None,
    version: str,
    seq: int,
    leaving: bool = False,
    sent: float | None = None,
) -> bytes:
    """This host's announcement, from its supervisor's `status` data (None before the first);
    `seq` counts up within this bridge run."""
    supervisor = (status or {}).get("supervisor", {})
    modules = [
        {key: row.get(key) for key in MODULE_FIELDS} for row in (status or {}).get("modules", [])
    ]
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "host": host,
            "instance": instance,
            "version": version,
            "pid": supervisor.get("pid"),
            "started": supervisor.get("started"),
            "modules": modules[:MAX_MODULES],
            "leaving": leaving,
            "seq": seq,
            "sent": time.time() if sent is None else sent,
        }
    )


def _text(value: Any) -> str | None:
    """A text field as `status --cluster` may print it: one printable line, cut."""
    if not isinstance(value, str):
        return None
    if len(value) <= _TEXT and value.isprintable() and value == value.strip():
        return value  # as it is (bounded_message looks at each character: 2,000 rows a second)
    return bounded_message(value, _TEXT)


def _number(value: Any) -> float | int | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return value if math.isfinite(value) and abs(value) <= _MAX_NUMBER else None


def decode_announcement(data: bytes) -> dict[str, Any]:
    """A validated announcement; raises BadAnnouncementError."""
    if len(data) > MAX_ANNOUNCEMENT:
        raise BadAnnouncementError(f"{len(data)} bytes")
    try:
        raw = msgpack.unpackb(data, raw=False)
    except Exception:  # anything: garbage from the network
        raise BadAnnouncementError("not msgpack") from None
    if not isinstance(raw, dict):
        raise BadAnnouncementError("not a map")
    host, instance = raw.get("host"), raw.get("instance")
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise BadAnnouncementError("no valid host")
    if not isinstance(instance, str) or not instance or len(instance) > 64:
        raise BadAnnouncementError("no valid instance")
    modules = raw.get("modules")
    if not isinstance(modules, list) or len(modules) > MAX_MODULES:
        raise BadAnnouncementError("no valid modules")
    rows: list[Row] = []
    for row in modules:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise BadAnnouncementError("a module row without a name")
        get = row.get
        # A tuple, not a map of 7 keys: 2,000 rows of each of 256 hosts are held.
        rows.append(
            (
                _text(row["name"]),
                _text(get("state")),
                _number(get("pid")),
                _number(get("restarts")),
                _number(get("uptime")),
                _number(get("rss_mb")),
                _text(get("why")),
            )
        )
    return {
        "host": host,
        "instance": instance,
        "version": _text(raw.get("version")),
        "pid": _number(raw.get("pid")),
        "started": _number(raw.get("started")),
        "modules": rows,
        "leaving": raw.get("leaving") is True,
        # None from a bridge of a version before them: taken as it comes
        "seq": seq if isinstance(seq := _number(raw.get("seq")), int) and seq >= 0 else None,
        "sent": _number(raw.get("sent")),
        # What it adds to the view of the cluster, packed, at most (see MAX_TABLE_SIZE).
        "size": len(msgpack.packb(rows)) + len(rows) * _ROW_KEYS + _HOST_SIZE,
    }


@dataclass
class Peer:
    """Another host, as its last announcement described it."""

    announcement: dict[str, Any]
    state: str = UP
    since: float = 0.0  # unix time the state began
    last_heard: float = 0.0  # unix time of the last announcement

    def row(self, now: float) -> dict[str, Any]:
        """Its row in `status --cluster --json`."""
        note = self.announcement
        return {
            "host": note["host"],
            "state": self.state,
            "since": self.since,
            "last_heard": round(now - self.last_heard, 3),
            "pid": note["pid"],
            "version": note["version"],
            "started": note["started"],
            "modules": [dict(zip(MODULE_FIELDS, row, strict=True)) for row in note["modules"]],
        }


@dataclass
class PeerTable:
    """The other hosts, by name. `heard` and `expire` return what changed, as
    (change, host, why) with change one of "joined", "lost", "left", "twin", "skewed" and
    "forgot" (a host unreachable or gone for FORGET_AFTER, or that made room for another)."""

    own_host: str
    own_instance: str
    peers: dict[str, Peer] = field(default_factory=dict)
    twins: set[str] = field(default_factory=set)  # instances of another host named as this one
    held_rows: int = 0  # module rows of the announcements held
    held_size: int = 0  # their size in the view (see MAX_TABLE_SIZE)
    skewed: set[str] = field(default_factory=set)  # hosts whose clock is said to be apart

    def heard(self, note: dict[str, Any], now: float) -> list[tuple[str, str, str]]:
        """A (decoded) announcement arrived."""
        host = note["host"]
        if note["instance"] == self.own_instance:
            return []
        sent = note["sent"]
        if sent is not None and sent > now:
            if sent - now > MAX_AGE:
                return self._skewed(host, now - sent)  # else it would hide the host's real ones
            note = {**note, "sent": now}  # a later run of the host is newer than this one
        if host == self.own_host:
            if note["instance"] in self.twins or len(self.twins) >= MAX_HOSTS or _stale(note, now):
                return []
            self.twins.add(note["instance"])
            return [("twin", host, f"pid {note['pid']}")]
        peer = self.peers.get(host)
        if peer is None:
            if _stale(note, now):
                return self._skewed(host, now - note["sent"])
            self.skewed.discard(host)
            changes = self._make_room(note)
            if not self._fits(note):
                return changes
            self.peers[host] = Peer(note, state=UP, since=now, last_heard=now)
            self._hold(note, 1)
            return changes if note["leaving"] else [*changes, ("joined", host, "")]
        if _replayed(note, peer.announcement, now):
            return []
        self._hold(peer.announcement, -1)
        if not self._fits(note):
            # It grew past what the table holds: still heard (not lost), with its old rows.
            old = peer.announcement
            note = {**note, "modules": old["modules"], "size": old["size"]}
        self._hold(note, 1)
        previous = peer.state
        peer.announcement, peer.last_heard = note, now
        if note["leaving"]:
            if previous != LEFT:
                peer.state, peer.since = LEFT, now
                return [("left", host, "its supervisor stopped")]
            return []
        if previous != UP:
            peer.state, peer.since = UP, now
            return [("joined", host, "")]
        return []

    def _skewed(self, host: str, age: float) -> list[tuple[str, str, str]]:
        """An announcement of a run not heard yet, too old (a replay, or a clock far behind
        ours), or any sent too far ahead (said once per host, until it is heard)."""
        if host in self.skewed or len(self.skewed) >= MAX_HOSTS:
            return []
        self.skewed.add(host)
        when = f"{age:.0f}s old" if age >= 0 else f"sent {-age:.0f}s ahead"
        why = f"its announcements are {when} by this host's clock (more than {MAX_AGE:g}s:"
        return [("skewed", host, f"{why} are the clocks apart?); not shown until they agree")]

    def expire(self, now: float) -> list[tuple[str, str, str]]:
        """Hosts not heard of for LOST_AFTER seconds become unreachable; those unreachable or
        gone for FORGET_AFTER are forgotten."""
        changes = []
        for host, peer in list(self.peers.items()):
            if peer.state == UP and now - peer.last_heard > LOST_AFTER:
                peer.state, peer.since = UNREACHABLE, now
                changes.append(("lost", host, f"no announcement for {now - peer.last_heard:.1f}s"))
            elif peer.state != UP and now - peer.since > FORGET_AFTER:
                changes.append(self._forget(peer, f"{peer.state} for {FORGET_AFTER:g}s"))
        return changes

    def rows(self, now: float) -> list[dict[str, Any]]:
        """Every other host's row, by name."""
        return [self.peers[host].row(now) for host in sorted(self.peers)]

    def _fits(self, note: dict[str, Any]) -> bool:
        """Whether the table has room for `note`: a new host's, or a known one's (whose rows
        held are taken off first)."""
        hosts = len(self.peers) - (note["host"] in self.peers)
        return _room(hosts, self.held_rows, self.held_size, note)

    def _hold(self, note: dict[str, Any], sign: int) -> None:
        self.held_rows += sign * len(note["modules"])
        self.held_size += sign * note["size"]

    def _make_room(self, note: dict[str, Any]) -> list[tuple[str, str, str]]:
        """Forget the hosts that left or were lost longest ago, as many as a new host's `note`
        needs (none if they would not make room enough)."""
        gone = sorted((p for p in self.peers.values() if p.state != UP), key=lambda p: p.since)
        hosts, rows, size = len(self.peers), self.held_rows, self.held_size
        needed = 0
        while not _room(hosts, rows, size, note):
            if needed == len(gone):
                return []
            held = gone[needed].announcement
            hosts, rows, size = hosts - 1, rows - len(held["modules"]), size - held["size"]
            needed += 1
        return [self._forget(peer, f"to make room for {note['host']}") for peer in gone[:needed]]

    def _forget(self, peer: Peer, why: str) -> tuple[str, str, str]:
        host = peer.announcement["host"]
        del self.peers[host]
        self._hold(peer.announcement, -1)
        return ("forgot", host, why)


def _room(hosts: int, rows: int, size: int, note: dict[str, Any]) -> bool:
    """Whether a table of `hosts` hosts, `rows` rows and `size` bytes has room for `note`."""
    return (
        hosts < MAX_HOSTS
        and rows + len(note["modules"]) <= MAX_TABLE_ROWS
        and size + note["size"] <= MAX_TABLE_SIZE
    )


def _stale(note: dict[str, Any], now: float) -> bool:
    """Whether an announcement of a run not heard yet is too old to be a live one's."""
    return note["sent"] is not None and now - note["sent"] > MAX_AGE


def _replayed(note: dict[str, Any], last: dict[str, Any], now: float) -> bool:
    """Whether `note` is older than `last`, the latest heard from its host: of the same bridge
    run and not numbered after it, or of another run sent before it (or long ago)."""
    if last["sent"] is not None and note["sent"] is None:
        return True  # recorded from a bridge of a version before them: not the host's now
    if note["instance"] == last["instance"]:
        return note["seq"] is not None and last["seq"] is not None and note["seq"] <= last["seq"]
    if note["sent"] is not None and last["sent"] is not None and note["sent"] <= last["sent"]:
        return True
    return _stale(note, now)
