"""The broker's group bookkeeping without sockets: one member per event, credit, redelivery,
lost counts and every bound."""

from __future__ import annotations

from collections import Counter

import pytest

from broker import group_table
from broker.__main__ import KeptReport
from broker.group_names import JoinRefusedError, zmq_prefix
from broker.group_table import KEPT_GRACE, GroupTable


def _table(*members: bytes, credit: int = 2, redeliver: bool = False) -> GroupTable:
    table = GroupTable()
    for member in members:
        table.join(member, b"g", b"jobs.*", credit, redeliver)
    return table


def test_the_first_join_subscribes_and_the_last_leave_unsubscribes() -> None:
    table = GroupTable()
    assert table.join(b"m1", b"g", b"jobs.*", 4, False) == b"jobs."
    assert table.join(b"m2", b"g", b"jobs.*", 4, False) is None
    assert table.join(b"m1", b"g", b"jobs.*", 9, False) is None  # again: an update
    assert table.leave(b"m1", b"g", b"jobs.*") is None
    assert table.leave(b"m2", b"g", b"jobs.*") == b"jobs."
    assert table.stats()[0]["members"] == 0  # its counters stay, for status
    assert zmq_prefix(b"*") == b"" and zmq_prefix(b"a.b") == b"a.b"


def test_each_event_goes_to_one_member_spread_evenly() -> None:
    table = _table(b"a", b"b", b"c", credit=1)
    seen: Counter[bytes] = Counter()
    for n in range(300):
        (delivery,) = table.route(b"jobs.x", str(n).encode())
        seen[delivery[0]] += 1
        table.ack(delivery[0], delivery[1])
    assert seen == {b"a": 100, b"b": 100, b"c": 100}


def test_patterns_match_exactly_not_by_prefix() -> None:
    table = GroupTable()
    table.join(b"m", b"g", b"jobs.resize", 4, False)
    assert table.route(b"jobs.resizer", b"") == []
    assert len(table.route(b"jobs.resize", b"")) == 1


def test_past_its_credit_a_member_gets_nothing_and_events_wait_in_order() -> None:
    table = _table(b"a", credit=2)
    sent = [table.route(b"jobs.x", bytes([n])) for n in range(4)]
    assert [len(s) for s in sent] == [1, 1, 0, 0]
    assert table.stats()[0]["queued"] == 2
    (released,) = table.ack(b"a", sent[0][0][1])
    assert released[5] == bytes([2])


def test_the_least_busy_member_is_chosen() -> None:
    table = _table(b"a", b"b", credit=4)
    first = table.route(b"jobs.x", b"1")[0]
    second = table.route(b"jobs.x", b"2")[0]
    assert {first[0], second[0]} == {b"a", b"b"}
    table.ack(first[0], first[1])
    assert table.route(b"jobs.x", b"3")[0][0] == first[0]  # it has nothing in flight now


@pytest.mark.parametrize("redeliver", [True, False])
def test_a_member_gone_with_events_unacknowledged(redeliver: bool) -> None:
    table = _table(b"a", b"b", credit=8, redeliver=redeliver)
    out = [table.route(b"jobs.x", bytes([n]))[0] for n in range(4)]
    to_a = [d[5] for d in out if d[0] == b"a"]
    again = table.drop(b"a")
    assert again == []  # b is still there: no unsubscribe
    moved = table.pump_all()
    stats = table.stats()[0]
    if redeliver:
        assert [d[5] for d in moved] == to_a and all(d[0] == b"b" for d in moved)
        assert stats["redelivered"] == len(to_a) and stats["lost"] == 0
    else:
        assert moved == [] and stats["lost"] == len(to_a) and stats["redelivered"] == 0


def test_a_redelivering_group_keeps_events_for_its_next_member() -> None:
    table = _table(b"a", credit=8, redeliver=True)
    table.route(b"jobs.x", b"1")
    assert table.drop(b"a") == []  # still subscribed: it keeps what comes meanwhile
    table.route(b"jobs.x", b"2")
    table.join(b"b", b"g", b"jobs.*", 8, True)
    assert [d[5] for d in table.pump_all()] == [b"1", b"2"]


def test_an_ack_from_another_member_or_unknown_is_ignored() -> None:
    table = _table(b"a", b"b")
    delivery = table.route(b"jobs.x", b"1")[0]
    other = b"b" if delivery[0] == b"a" else b"a"
    table.ack(other, delivery[1])
    table.ack(delivery[0], b"\x00" * 8)
    assert table.stats()[0]["acked"] == 0 and table.stats()[0]["in_flight"] == 1


def test_the_queue_is_bounded_by_count_and_bytes() -> None:
    each = len(b"jobs.x") + 4 + 64  # topic, body and what a queued event costs besides
    table = GroupTable(max_queued=3, max_queued_bytes=2 * each + 1)
    table.join(b"a", b"g", b"jobs.*", 1, False)
    table.route(b"jobs.x", b"sent")
    for _ in range(5):
        table.route(b"jobs.x", b"1234")
    stats = table.stats()[0]
    assert stats["queued"] == 2 and stats["overflow"] == 3  # the bytes hold two of them
    assert table.queued_bytes == 2 * each
    (tag,) = _tags(table)
    table.ack(b"a", tag)
    assert table.queued_bytes == each  # one went out


def _tags(table: GroupTable) -> list[bytes]:
    return [
        tag for joined in table.members.values() for m in joined.values() for tag in m.in_flight
    ]


def test_events_with_empty_bodies_count_against_the_byte_bound() -> None:
    """Long topics and empty bodies: each queued event costs memory all the same."""
    table = GroupTable(max_queued=100_000, max_queued_bytes=10_000)
    table.join(b"a", b"g", b"jobs.*", 1, True)
    topic = b"jobs." + b"x" * 200
    for _ in range(1000):
        table.route(topic, b"")
    stats = table.stats()[0]
    assert stats["queued"] == 10_000 // (len(topic) + 64) and stats["overflow"] > 900


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        (b"", b"a.*"),
        (b"x" * 65, b"a.*"),
        (b"bad name", b"a.*"),
        (b"-lead", b"a.*"),
        (b"ok", b"a"),
        (b"ok", b"a.**"),
        (b"ok", b"a." + b"b" * 300),
        (b"ok", b"\xff.x"),
    ],
)
def test_bad_names_and_patterns_are_refused(name: bytes, pattern: bytes) -> None:
    with pytest.raises(JoinRefusedError):
        GroupTable().join(b"m", name, pattern, 1, False)


def test_members_per_group_and_groups_per_member_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(group_table, "MAX_MEMBERS_PER_GROUP", 3)
    monkeypatch.setattr(group_table, "MAX_PATTERNS_PER_MEMBER", 2)
    table = _table(b"a", b"b", b"c")
    with pytest.raises(JoinRefusedError, match="3 members"):
        table.join(b"d", b"g", b"jobs.*", 1, False)
    table.join(b"a", b"h", b"jobs.*", 1, False)
    with pytest.raises(JoinRefusedError, match="at most 2"):
        table.join(b"a", b"i", b"jobs.*", 1, False)


def test_groups_and_members_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(group_table, "MAX_GROUPS", 2)
    monkeypatch.setattr(group_table, "MAX_MEMBERS", 3)
    table = GroupTable()
    table.join(b"a", b"g1", b"x.*", 1, False)
    table.join(b"b", b"g2", b"x.*", 1, False)
    with pytest.raises(JoinRefusedError, match="2 groups"):
        table.join(b"c", b"g3", b"x.*", 1, False)
    table.leave(b"a", b"g1", b"x.*")  # g1 idle now: a new group may take its place
    table.join(b"c", b"g3", b"x.*", 1, False)
    assert [g["group"] for g in table.stats()] == ["g2", "g3"]
    table.join(b"d", b"g3", b"x.*", 1, False)  # b, c, d
    with pytest.raises(JoinRefusedError, match="3 group members"):
        table.join(b"e", b"g3", b"x.*", 1, False)


def test_credit_is_clamped() -> None:
    table = GroupTable()
    table.join(b"a", b"g", b"x.*", 10**6, False)
    table.join(b"b", b"g", b"y.*", 0, False)
    assert table.members[b"a"][(b"g", b"x.*")].credit == group_table.MAX_CREDIT
    assert table.members[b"b"][(b"g", b"y.*")].credit == 1


def test_a_full_table_forgets_the_longest_empty_redelivering_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redelivering groups keep receiving without members; they must not fill the table for
    good: the one empty longest makes room, what it queued counted lost."""
    monkeypatch.setattr(group_table, "MAX_GROUPS", 3)
    table = GroupTable()
    for name in (b"g1", b"g2", b"g3"):
        table.join(b"m-" + name, name, b"x.*", 1, True)
    table.route(b"x.a", b"kept")  # one each in flight
    table.drop(b"m-g2")  # empty first: its event goes back to its queue
    table.drop(b"m-g1")
    each = len(b"x.a") + len(b"kept") + 64
    assert table.queued_bytes == 2 * each
    assert table.join(b"n", b"g4", b"y.*", 1, True) == b"y."
    assert table.evicted() == [b"x."] and table.evicted() == []
    assert [g["group"] for g in table.stats()] == ["g1", "g3", "g4"]
    assert table.queued_bytes == each
    table.drop(b"m-g3")
    table.join(b"n", b"g5", b"y.*", 1, True)  # g1 (empty before g3) goes
    table.join(b"n", b"g6", b"y.*", 1, True)  # then g3
    assert table.evicted() == [b"x.", b"x."]
    assert [g["group"] for g in table.stats()] == ["g4", "g5", "g6"]
    assert table.queued_bytes == 0
    with pytest.raises(JoinRefusedError, match="3 groups"):  # every group has a member
        table.join(b"n2", b"g7", b"y.*", 1, True)


def test_an_ack_meant_for_a_broker_before_a_restart_acks_nothing() -> None:
    """Tags do not start over in each broker: a stale ack must not ack a new event."""
    before, after = _table(b"a"), _table(b"a")  # the same member, in the new broker too
    stale = before.route(b"jobs.x", b"old")[0][1]
    fresh = after.route(b"jobs.x", b"new")[0][1]
    assert stale != fresh
    after.ack(b"a", stale)
    assert after.stats()[0]["acked"] == 0 and after.stats()[0]["in_flight"] == 1


def test_a_group_nobody_takes_from_gives_way_to_the_others() -> None:
    """A hostile module joined a group with redelivery and left: the group kept queueing its
    events until the bytes all groups share were full, and a working group lost 85% of its
    events as overflow, for good. The group holding the most now gives way, oldest first."""
    each = len(b"hog.x") + 100 + 64
    table = GroupTable(max_queued=100_000, max_queued_bytes=10 * each)
    table.join(b"h", b"hog", b"hog.*", 1, True)
    table.drop(b"h")  # gone: the group keeps queueing for its next member
    for n in range(20):
        table.route(b"hog.x", b"%100d" % n)
    table.join(b"w", b"work", b"job.*", 1, False)
    table.route(b"job.x", b"first")  # to the member at once
    for n in range(5):
        table.route(b"job.x", b"%100d" % n)  # the member is at its credit: they wait
    stats = {s["group"]: s for s in table.stats()}
    assert stats["work"]["queued"] == 5 and stats["work"]["overflow"] == 0
    assert stats["hog"]["queued"] == 5 and stats["hog"]["overflow"] == 15
    assert table.queued_bytes <= 10 * each
    # Even then, the group holding the most overflows itself, not the smaller one.
    for n in range(10):
        table.route(b"job.x", b"%100d" % n)
    stats = {s["group"]: s for s in table.stats()}
    assert stats["hog"]["queued"] >= 4 and stats["work"]["overflow"] > 0


def test_room_is_made_whole_or_not_at_all() -> None:
    """A reviewer's case: one group's events taken, then the newcomer refused all the same."""
    table = GroupTable(max_queued=100_000, max_queued_bytes=1000)
    table.join(b"a", b"big", b"a.*", 1, True)
    table.drop(b"a")
    for _ in range(11):
        table.route(b"a.x", b"x" * 10)  # 77 bytes each: 847 in all
    table.join(b"b", b"new", b"b.*", 1, True)
    table.drop(b"b")
    table.route(b"b.x", b"y" * 538)  # 605 bytes: 'big' would have to fall below that
    stats = {s["group"]: s for s in table.stats()}
    assert stats["new"]["overflow"] == 1 and stats["big"]["overflow"] == 0
    assert table.queued_bytes == 11 * 77


def test_events_put_back_for_redelivery_take_room_from_a_larger_group() -> None:
    """A member crashed with events in flight: they went back to its group's queue, then were
    cut from that queue's tail while an idle group kept all the bytes."""
    each = len(b"x.x") + 100 + 64
    table = GroupTable(max_queued=100_000, max_queued_bytes=20 * each)
    table.join(b"h", b"idle", b"i.*", 1, True)
    table.drop(b"h")
    for _ in range(20):
        table.route(b"i.x", b"%100d" % 0)  # fills every byte
    table.join(b"w", b"work", b"x.*", 1, True)
    table.route(b"x.x", b"%100d" % 1)  # to the member at once: in flight, not queued
    table.drop(b"w")  # crashed: its event goes back to the queue
    stats = {s["group"]: s for s in table.stats()}
    assert stats["work"]["queued"] == 1 and stats["work"]["overflow"] == 0
    assert stats["idle"]["overflow"] == 1 and table.queued_bytes <= 20 * each


def _fail_member(table: GroupTable, member: bytes, *, failed: bool = True) -> list[bytes]:
    """A member joins, gets what is queued, and goes away; returns the bodies it held."""
    table.join(member, b"g", b"jobs.*", 8, True)
    held = [d[5] for d in table.pump_all()]
    table.drop(member, failed=failed)
    return held


def test_a_poison_event_is_dropped_as_dead_after_max_failures_and_only_it() -> None:
    table = GroupTable()
    table.join(b"first", b"g", b"jobs.*", 8, True)
    for body in (b"poison", b"ok1", b"ok2"):
        table.route(b"jobs.x", body)
    table.drop(b"first")  # failure 1: it was running "poison", the oldest it held
    for n in range(2, group_table.MAX_FAILURES + 1):
        assert _fail_member(table, f"m{n}".encode()) == [b"poison", b"ok1", b"ok2"]
    stats = table.stats()[0]
    assert stats["dead"] == 1 and stats["lost"] == 0, stats
    assert stats["redelivered"] == 3 * group_table.MAX_FAILURES - 1, stats
    table.join(b"last", b"g", b"jobs.*", 8, True)
    assert [d[5] for d in table.pump_all()] == [b"ok1", b"ok2"]  # the rest, never blamed
    assert table.queued_bytes == 0


def test_a_member_saying_goodbye_never_counts_against_its_events() -> None:
    table = GroupTable()
    table.join(b"first", b"g", b"jobs.*", 8, True)
    table.route(b"jobs.x", b"e")
    table.drop(b"first", failed=False)
    for n in range(3 * group_table.MAX_FAILURES):
        assert _fail_member(table, f"m{n}".encode(), failed=False) == [b"e"]
    assert table.stats()[0]["dead"] == 0


def test_events_behind_a_poison_one_are_blamed_only_once_they_run_first() -> None:
    """A failure counts against the oldest event held: after the poison one is dead, the next
    becomes the oldest and starts from the failures of its own (none so far)."""
    table = GroupTable()
    table.join(b"first", b"g", b"jobs.*", 8, True)
    table.route(b"jobs.x", b"poison")
    table.route(b"jobs.x", b"next")
    table.drop(b"first")
    for n in range(group_table.MAX_FAILURES - 1):
        _fail_member(table, f"m{n}".encode())
    assert table.stats()[0]["dead"] == 1
    assert _fail_member(table, b"again") == [b"next"]  # its first failure
    assert table.stats()[0]["dead"] == 1 and table.stats()[0]["queued"] == 1


def test_only_the_oldest_event_of_all_a_member_held_is_blamed_not_one_per_group() -> None:
    """Acks are in order across the member, not per group: in its other groups the oldest
    held event was waiting, not running (a review: mail.send dead with the poison jobs.crash)."""
    table = GroupTable()

    def member(name: bytes) -> list[bytes]:
        for pattern in (b"jobs.*", b"mail.*"):
            table.join(name, b"g", pattern, 8, True)
        return [d[4] for d in table.pump_all()]

    member(b"first")
    table.route(b"jobs.crash", b"")
    table.route(b"mail.send", b"")
    table.drop(b"first")
    for n in range(group_table.MAX_FAILURES - 1):
        assert member(b"m%d" % n) == [b"jobs.crash", b"mail.send"]
        table.drop(b"m%d" % n)
    dead = {g["pattern"]: g["dead"] for g in table.stats()}
    assert dead == {"jobs.*": 1, "mail.*": 0}, dead


def test_an_event_whose_send_found_the_member_gone_is_not_blamed() -> None:
    """A member that died idle is found by the send of its next event: that event never
    reached it, and nor did those after it."""
    table = _table(b"a", credit=8, redeliver=True)
    (delivery,) = table.route(b"jobs.x", b"never delivered")
    for _ in range(group_table.MAX_FAILURES + 1):
        table.drop(b"a", unsent=delivery[1])
        table.join(b"a", b"g", b"jobs.*", 8, True)
        (delivery,) = table.pump_all()
    assert table.stats()[0]["dead"] == 0 and delivery[5] == b"never delivered"


def test_a_kept_group_queues_before_any_member_and_a_join_takes_the_queue() -> None:
    """What a restarted broker does with the redelivering groups the last one had."""
    table = GroupTable()
    assert table.keep(b"g", b"jobs.*") == b"jobs."  # subscribe: its events come from now on
    assert table.keep(b"g", b"jobs.*") is None  # once
    assert table.route(b"jobs.x", b"1") == []
    assert table.stats()[0]["queued"] == 1 and table.stats()[0]["redeliver"] is True
    assert table.join(b"a", b"g", b"jobs.*", 8, True) is None  # subscribed already
    assert [d[5] for d in table.pump_all()] == [b"1"]
    with pytest.raises(JoinRefusedError):
        table.keep(b"bad name", b"jobs.*")


def test_a_kept_group_stays_kept_without_members_for_a_grace_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A restarted broker reports at once, before any member is back: its kept groups must
    still be kept by the broker after it (brokers in a crash loop forgot them); once the grace
    has passed without a member (their module removed), no longer."""
    now = [1000.0]
    monkeypatch.setattr("broker.group_table.time.monotonic", lambda: now[0])
    monkeypatch.setattr("broker.group_state.time.monotonic", lambda: now[0])
    table = GroupTable()
    table.keep(b"g", b"jobs.*")
    report = KeptReport()
    report({"groups": table.stats()})
    assert capsys.readouterr().out == 'kept {"part": 0, "of": 1, "groups": [["g", "jobs.*"]]}\n'
    now[0] += KEPT_GRACE + 1
    report({"groups": table.stats()})  # the stats changed ("kept"): the broker reports them
    assert capsys.readouterr().out == 'kept {"part": 0, "of": 1, "groups": []}\n'
    table.join(b"a", b"g", b"jobs.*", 8, True)  # a member back: kept again, for its members
    report({"groups": table.stats()})
    assert capsys.readouterr().out == 'kept {"part": 0, "of": 1, "groups": [["g", "jobs.*"]]}\n'
