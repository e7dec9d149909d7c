"""The table of hosts, from their announcements (peers): who joined, was lost, left or is
forgotten; what an announcement may hold, and how much of them all the table keeps."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack
import pytest

from orchestrator.cluster.peers import (
    FORGET_AFTER,
    LOST_AFTER,
    MAX_ANNOUNCEMENT,
    MAX_MODULES,
    MAX_TABLE_ROWS,
    MAX_TABLE_SIZE,
    MODULE_FIELDS,
    BadAnnouncementError,
    PeerTable,
    decode_announcement,
    encode_announcement,
)
from orchestrator.cluster.signing import MAX_AGE

_SEQ = iter(range(1, 1_000_000))


def note(
    host: str,
    instance: str = "i1",
    *,
    leaving: bool = False,
    sent: float | None = None,
    seq: int | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An announcement as it arrives; sent when `sent` says (by default the last `now` the test
    gives the table), numbered after the last one unless `seq` says."""
    status = status or {
        "supervisor": {"pid": 7, "started": 1.0},
        "modules": [{"name": "m", "state": "x"}],
    }
    data = encode_announcement(
        host=host,
        instance=instance,
        status=status,
        version="1",
        leaving=leaving,
        seq=next(_SEQ) if seq is None else seq,
        sent=sent,
    )
    return decode_announcement(data)


def test_hosts_join_get_lost_come_back_and_leave() -> None:
    table = PeerTable("alpha", "me")
    assert table.heard(note("beta", sent=100.0), 100.0) == [("joined", "beta", "")]
    assert table.heard(note("beta", sent=101.0), 101.0) == []
    assert table.expire(101.0 + LOST_AFTER) == []
    lost = table.expire(101.1 + LOST_AFTER)
    assert [change[:2] for change in lost] == [("lost", "beta")]
    assert table.rows(110.0)[0]["state"] == "unreachable"
    assert table.heard(note("beta", "i2", sent=111.0), 111.0) == [("joined", "beta", "")]
    left = table.heard(note("beta", "i2", leaving=True, sent=112.0), 112.0)
    assert left[0][:2] == ("left", "beta")
    assert table.expire(200.0) == []  # a host that left is not lost too
    assert table.heard(note("alpha", "me", sent=113.0), 113.0) == []  # our own
    twin = table.heard(note("alpha", "twin", sent=113.0), 113.0)
    assert twin == [("twin", "alpha", "pid 7")]
    assert table.heard(note("alpha", "twin", sent=114.0), 114.0) == []  # said once


def test_an_announcement_sent_again_changes_nothing() -> None:
    """Any client of the NATS server can record signed announcements and send them again: one
    must neither keep a stopped host up nor make a live one leave, nor a gone one join."""
    table = PeerTable("alpha", "me")
    old_run = [note("beta", "run1", sent=100.0 + i) for i in range(3)]
    old_goodbye = note("beta", "run1", leaving=True, sent=103.0)
    for n, announcement in enumerate(old_run):
        table.heard(announcement, 100.0 + n)
    assert table.heard(old_goodbye, 103.0) == [("left", "beta", "its supervisor stopped")]
    assert table.heard(old_run[-1], 104.0) == []  # a stopped host is not up again
    assert table.rows(104.0)[0]["state"] == "left"
    assert table.heard(note("beta", "run2", sent=110.0), 110.0) == [("joined", "beta", "")]
    assert table.heard(old_goodbye, 111.0) == []  # an old run's goodbye: it has not left
    assert table.heard(old_run[0], 111.5) == []
    assert table.rows(112.0)[0]["state"] == "up"
    assert table.heard(note("beta", "run2", seq=1, sent=112.0), 112.0) == []  # not after the last
    fresh = PeerTable("alpha", "me")  # one that never heard beta: a recording is too old
    skewed = fresh.heard(old_run[-1], 102.0 + MAX_AGE + 1)
    assert [change[:2] for change in skewed] == [("skewed", "beta")]  # said once
    assert "clocks apart" in skewed[0][2] and fresh.heard(old_run[-1], 140.0) == []
    assert fresh.heard(note("beta", "run3", sent=130.0), 131.0) == [("joined", "beta", "")]


def test_an_announcement_from_the_future_hides_no_host() -> None:
    """One announcement of another run sent a day ahead (a clock far off, or a forgery with the
    cluster's credentials) hid the host's real ones, all older, for a day."""
    table = PeerTable("alpha", "me")
    assert table.heard(note("beta", "run1", sent=100.0), 100.0) == [("joined", "beta", "")]
    ahead = table.heard(note("beta", "run0", sent=100.0 + 86400), 101.0)
    assert [change[:2] for change in ahead] == [("skewed", "beta")]
    assert "ahead" in ahead[0][2]
    assert table.heard(note("beta", "run0", sent=200.0 + 86400), 102.0) == []  # said once
    left = table.heard(note("beta", "run1", leaving=True, sent=103.0), 103.0)
    assert [change[:2] for change in left] == [("left", "beta")]  # still heard
    # Within the allowed difference, one ahead is kept as sent when it arrived.
    assert table.heard(note("beta", "run2", sent=110.0 + MAX_AGE - 1), 110.0)[0][:2] == (
        "joined",
        "beta",
    )
    assert table.heard(note("beta", "run3", sent=111.0), 111.0) == []
    assert table.peers["beta"].announcement["instance"] == "run3"  # the later run is heard
    fresh = PeerTable("alpha", "me")
    far = fresh.heard(note("gamma", "run1", sent=100.0 + MAX_AGE + 1), 100.0)
    assert [change[:2] for change in far] == [("skewed", "gamma")] and fresh.rows(100.0) == []


def test_an_announcement_from_before_the_upgrade_is_not_replayed_over_a_new_one() -> None:
    """Recorded before the hosts carried a send time and a number (or forged without them):
    once the host is heard with them, one without is old."""
    table = PeerTable("alpha", "me")
    table.heard(note("beta", "run2", sent=200.0), 200.0)
    legacy = decode_announcement(
        msgpack.packb({"host": "beta", "instance": "run1", "modules": [], "leaving": True})
    )
    assert legacy["sent"] is None and legacy["seq"] is None
    assert table.heard(legacy, 201.0) == []
    assert table.rows(201.0)[0]["state"] == "up"
    old = PeerTable("alpha", "me")  # a host of the old version is heard as before
    assert old.heard(legacy, 201.0) == []  # (a goodbye first: known, not joined)
    assert old.rows(201.0)[0]["state"] == "up"


def test_announcements_and_requests_allow_the_same_clock_difference() -> None:
    from orchestrator.cluster import peers

    assert peers.MAX_AGE == MAX_AGE


def status_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"supervisor": {"pid": 7, "started": 1.0}, "modules": rows}


def test_the_table_holds_a_bounded_number_of_rows() -> None:
    """200 hosts of 2,000 minimal rows (3.2 MB received, within the old bound of 16 MB of
    announcements) made a view of 20 MB, which the supervisor would not take."""
    status = status_of([{"name": "m"}] * MAX_MODULES)
    table = PeerTable("alpha", "me")
    for i in range(200):
        table.heard(note(f"h{i:03}", status=status, sent=1.0), 1.0)
    assert len(table.peers) == MAX_TABLE_ROWS // MAX_MODULES
    assert table.held_rows == sum(len(p.announcement["modules"]) for p in table.peers.values())
    assert table.held_rows <= MAX_TABLE_ROWS and table.held_size <= MAX_TABLE_SIZE


def test_the_table_holds_a_bounded_size_and_a_host_grows_only_within_it() -> None:
    rows = [{"name": f"m{i:04}" + "x" * 185, "state": "running"} for i in range(600)]
    status = status_of(rows)
    big = note("h0", status=status, sent=1.0)
    fits = MAX_TABLE_SIZE // big["size"]
    table = PeerTable("alpha", "me")
    for i in range(fits + 5):
        table.heard(note(f"h{i}", status=status, sent=1.0), 1.0)
    assert len(table.peers) == fits and table.held_size <= MAX_TABLE_SIZE
    # A host already held may grow only within the bound: past it, it is still heard (never
    # lost for it), with the rows it had.
    assert MAX_TABLE_SIZE - table.held_size < big["size"]  # no room for one more host
    longer = [{**row, "state": "s" * 200, "why": "y" * 200} for row in rows]  # more than that
    grown = note("h0", status=status_of(longer), sent=2.0)
    assert grown["size"] > big["size"]
    for second in range(2, 10):
        table.heard(note("h0", status=status_of(longer), sent=second), second)
    lost = {host for _, host, _ in table.expire(10.0)}
    assert lost and "h0" not in lost  # the others, silent since 1.0, are
    assert table.held_size <= MAX_TABLE_SIZE
    assert table.peers["h0"].row(10.0)["modules"][0]["why"] is None  # the old rows
    assert table.peers["h0"].last_heard == 9


def test_hosts_unreachable_or_gone_an_hour_are_forgotten_and_make_room() -> None:
    """Once the sender of a burst stopped, its hosts stayed for good (forgotten only when the
    table was full), and with them a view the supervisor would not take."""
    table = PeerTable("alpha", "me")
    table.heard(note("beta", sent=100.0), 100.0)
    table.heard(note("gamma", sent=100.0), 100.0)
    table.heard(note("gamma", leaving=True, sent=101.0), 101.0)
    assert [change[:2] for change in table.expire(105.0)] == [("lost", "beta")]
    assert table.expire(100.0 + FORGET_AFTER) == []
    forgot = table.expire(101.5 + FORGET_AFTER)
    assert [change[:2] for change in forgot] == [("forgot", "gamma")]
    assert [change[:2] for change in table.expire(105.5 + FORGET_AFTER)] == [("forgot", "beta")]
    assert table.peers == {} and (table.held_rows, table.held_size) == (0, 0)
    # A full table forgets those gone longest ago, as many as a new host needs.
    status = status_of([{"name": "m"}] * MAX_MODULES)
    for i in range(MAX_TABLE_ROWS // MAX_MODULES):
        table.heard(note(f"h{i:03}", status=status, sent=200.0 + i), 200.0 + i)
    table.expire(300.0)  # all lost
    changes = table.heard(note("new", status=status, sent=301.0), 301.0)
    assert changes == [("forgot", "h000", "to make room for new"), ("joined", "new", "")]


def test_numbers_and_texts_of_an_announcement_are_fit_to_print() -> None:
    raw = {
        "host": "a",
        "instance": "i",
        "pid": float("nan"),
        "started": float("inf"),
        "modules": [{"name": "m\x1b]0;title\x07\nfake line", "uptime": 1e300, "rss_mb": -1e308}],
    }
    decoded = decode_announcement(msgpack.packb(raw))
    assert decoded["pid"] is None and decoded["started"] is None
    row = dict(zip(MODULE_FIELDS, decoded["modules"][0], strict=True))
    assert row["uptime"] is None and row["rss_mb"] is None
    assert row["name"].isprintable() and "fake line" in row["name"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb([1]),
        msgpack.packb({"host": "a b", "instance": "i", "modules": []}),
        msgpack.packb({"host": "a", "instance": "", "modules": []}),
        msgpack.packb({"host": "a", "instance": "i", "modules": [{"state": "x"}]}),
        msgpack.packb({"host": "a", "instance": "i", "modules": "no"}),
        b"\x00" * (MAX_ANNOUNCEMENT + 1),
    ],
)
def test_garbage_announcements_are_refused(data: bytes) -> None:
    with pytest.raises(BadAnnouncementError):
        decode_announcement(data)


def test_fields_of_an_announcement_are_typed_and_cut() -> None:
    raw = {
        "host": "a",
        "instance": "i",
        "modules": [{"name": "n" * 1000, "pid": "nope", "restarts": True, "state": 5}],
    }
    row = dict(
        zip(MODULE_FIELDS, decode_announcement(msgpack.packb(raw))["modules"][0], strict=True)
    )
    assert len(row["name"]) == 200 and row["pid"] is None and row["restarts"] is None
    assert row["state"] is None


def test_hosts_of_many_distinct_rows_take_a_bounded_memory() -> None:
    """256 hosts of 2,000 rows of short distinct texts, announced every second (46 KB each, 12 MB
    in all, within the old bound of 16 MB received): the bridge grew to 263 MB and was killed over
    its limit of 256 MB, again and again. Here 40 such hosts, more than the table holds, as
    Python allocates them."""

    def announcement(i: int) -> bytes:
        rows = [
            {"name": f"{i:02x}{j:03x}"[-4:] + f"{j:04d}", "state": f"s{j:03x}", "why": f"w{j}"}
            for j in range(MAX_MODULES)
        ]
        status = {"supervisor": {"pid": 1, "started": 1.0}, "modules": rows}
        return encode_announcement(
            host=f"fake{i:04d}", instance=f"run{i}", status=status, version="1", seq=1, sent=1.0
        )

    hosts = 60
    assert hosts * MAX_MODULES > MAX_TABLE_ROWS
    announcements = [announcement(i) for i in range(hosts)]
    tracemalloc.start()
    try:
        table = PeerTable("alpha", "me")
        for data in announcements:
            table.heard(decode_announcement(data), 1.0)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.held_rows <= MAX_TABLE_ROWS
    assert held < 30 * 1024 * 1024, f"{held / 1024 / 1024:.0f} MB"


def test_a_host_the_bridge_forgot_leaves_the_supervisors_row_too() -> None:
    from orchestrator.bridge_process import BridgeProcess

    process = BridgeProcess.__new__(BridgeProcess)  # its line handling only
    published: list[str] = []
    process.peers = {}
    process._publish = lambda event_type, **data: published.append(event_type)
    for line in ("joined beta", "lost beta no announcement for 3.6s", "joined gamma"):
        process._host_changed(line)
    process._host_changed("forgot beta unreachable for 3600s")
    assert process.peers == {"gamma": "up"}
    assert published == ["host.joined", "host.lost", "host.joined"]  # no event for forgetting
