"""Grouped subscriptions with a real broker process and members as processes of their own:
each event to exactly one member, crashes counted or redelivered, hostile peers shrugged off."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from group_net import GroupNet, group_net
from helpers import Recorder, wait_until

from module_sdk import groups
from module_sdk.bus import ZmqEventBus


@pytest.fixture(scope="module")
def net() -> Iterator[GroupNet]:
    with group_net() as groups:
        yield groups


def _log(where: Path, name: str) -> list[str]:
    path = where / f"{name}.log"
    return path.read_text().splitlines() if path.exists() else []


def _received(where: Path, names: list[str]) -> dict[str, list[str]]:
    """Per member, the `n` of each event it finished."""
    return {
        name: [
            line.split()[1]
            for line in _log(where, name)
            if not line.startswith(("stalled", "poisoned"))
        ]
        for name in names
    }


def test_each_event_goes_to_exactly_one_member_and_ungrouped_subscribers_get_all(
    net: GroupNet,
) -> None:
    where = net.dir / "spread"
    names = ["w1", "w2", "w3"]
    for name in names:
        net.member(name, "resize", "resize.*", where)
    wait_until(lambda: net.stats("resize").get("members") == 3, 10.0, "three members")
    for n in range(300):
        net.client.publish("resize.job", {"n": n})

    def total() -> int:
        return sum(len(got) for got in _received(where, names).values())

    wait_until(lambda: total() >= 300, 20.0, "300 events done by the members", lambda: str(total()))
    got = _received(where, names)
    every = [n for name in names for n in got[name]]
    assert sorted(every, key=int) == [str(n) for n in range(300)]  # none twice, none missing
    assert min(len(got[name]) for name in names) >= 20, {k: len(v) for k, v in got.items()}
    wait_until(lambda: len([e for e in net.everything.events if e.type == "resize.job"]) == 300)
    stats = wait_until(lambda: (s := net.stats("resize"))["acked"] == 300 and s, 10.0, "all acked")
    assert stats["delivered"] == 300 and stats["lost"] == 0 and stats["redelivered"] == 0, stats


@pytest.mark.parametrize("redeliver", [True, False], ids=["redeliver", "at-most-once"])
def test_a_member_killed_mid_callback(net: GroupNet, redeliver: bool) -> None:
    group = "redo" if redeliver else "once"
    where = net.dir / group
    names = [f"{group}1", f"{group}2"]
    procs = {
        name: net.member(name, group, f"{group}.*", where, redeliver=redeliver) for name in names
    }
    wait_until(lambda: net.stats(group).get("members") == 2, 10.0, "two members")
    net.client.publish(f"{group}.job", {"n": 0, "stall": True})

    def stalled() -> tuple[str, str] | None:
        for name in names:
            for line in _log(where, name):
                if line.startswith("stalled "):
                    return name, line.split()[1]
        return None

    victim, event_id = wait_until(stalled, 10.0, "a member stalled in its callback")
    procs[victim].send_signal(signal.SIGKILL)
    survivor = next(name for name in names if name != victim)
    if redeliver:
        wait_until(lambda: "0" in _received(where, [survivor])[survivor], 10.0, "redelivered")
        assert any(line.startswith(event_id) for line in _log(where, survivor))
        stats = wait_until(lambda: (s := net.stats(group))["members"] == 1 and s, 10.0)
        assert stats["redelivered"] == 1 and stats["lost"] == 0, stats
    else:
        stats = wait_until(lambda: (s := net.stats(group))["lost"] == 1 and s, 10.0, "lost")
        assert stats["redelivered"] == 0 and stats["members"] == 1, stats
        net.client.publish(f"{group}.job", {"n": 1})  # after the loss was counted: no redelivery
        wait_until(lambda: "1" in _received(where, [survivor])[survivor], 10.0, "the next one")
        assert _received(where, [survivor])[survivor] == ["1"]


def test_a_poison_event_is_dropped_as_dead_after_three_members_fail_on_it(net: GroupNet) -> None:
    """Each member that runs it crashes: it is redelivered to others, then dropped and counted
    `dead`; the events around it reach the members left, at least once (an ack still queued in
    a member as it dies is lost with it: that event comes again, and may take one blame)."""
    where = net.dir / "poison"
    names = [f"p{n}" for n in range(7)]
    for name in names:
        net.member(name, "poison", "poison.*", where, redeliver=True)
    wait_until(lambda: net.stats("poison").get("members") == len(names), 10.0, "the members")
    net.client.publish("poison.job", {"poison": True})
    for n in range(20):
        net.client.publish("poison.job", {"n": n})
    stats = wait_until(
        lambda: (s := net.stats("poison"))["dead"] == 1 and s["queued"] == 0 and s, 15.0, "dead"
    )

    def poisoned() -> list[str]:
        return [line for name in names for line in _log(where, name) if line.startswith("poisoned")]

    done = wait_until(
        lambda: (
            {n for ns in _received(where, names).values() for n in ns} >= set(map(str, range(20)))
            and True
        ),
        15.0,
        "the other events done",
    )
    assert done
    crashes = len(poisoned())
    assert 3 <= crashes <= 5 and stats["members"] == len(names) - crashes, (poisoned(), stats)
    assert "dropped as poison" in net.broker_out.read_text()


def test_a_member_joining_later_gets_a_share(net: GroupNet) -> None:
    where = net.dir / "late"
    net.member("early", "late", "late.*", where)
    for n in range(20):
        net.client.publish("late.job", {"n": n})
    wait_until(lambda: len(_received(where, ["early"])["early"]) == 20, 10.0, "the first 20")
    net.member("later", "late", "late.*", where)
    wait_until(lambda: net.stats("late").get("members") == 2, 10.0, "two members")
    for n in range(20, 220):
        net.client.publish("late.job", {"n": n})
    names = ["early", "later"]
    wait_until(lambda: sum(map(len, _received(where, names).values())) == 220, 20.0, "220 done")
    got = _received(where, names)
    assert len(got["later"]) >= 20, {k: len(v) for k, v in got.items()}
    assert sorted(got["early"] + got["later"], key=int) == [str(n) for n in range(220)]


def test_garbage_on_the_groups_socket_is_dropped_and_counted(net: GroupNet) -> None:
    before = net.stats()
    hostile = net.raw()
    for frames in (
        [b"Z"],
        [b"J"],
        [b"A", b"123"],  # not a whole tag
        [b"S", b"extra"],
        [b"\xff" * 100],
        [b"A"] * 20,  # too many frames
    ):
        hostile.send_multipart(frames)
    hostile.send_multipart([b"J", b"x" * 100, b"a.*", b"8", b"-"])  # a name over the bound
    hostile.send_multipart([b"J", b"ok", b"not a pattern", b"8", b"-"])
    hostile.send_multipart([b"A", b"\x00" * 8])  # an unknown tag: ignored, not an error
    stats = wait_until(  # in order: once both joins are refused, the garbage before was read
        lambda: (s := net.stats())["refused"] == before["refused"] + 2 and s, 10.0, "refused"
    )
    assert stats["bad_frames"] == before["bad_frames"] + 6, stats
    oversized = net.raw()
    oversized.send_multipart([b"J", b"y" * 10_000, b"a.*", b"8", b"-"])  # over MAXMSGSIZE
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:  # not even ZMTP
        raw.connect(net.groups[len("ipc://") :])
        raw.sendall(os.urandom(4096))
    assert net.stats()["refused"] == before["refused"] + 2  # the oversized join never arrived
    assert net.broker.poll() is None
    where = net.dir / "after"
    net.member("after1", "after", "after.*", where)
    net.client.publish("after.job", {"n": 7})
    wait_until(lambda: _received(where, ["after1"])["after1"] == ["7"], 10.0, "still delivering")
    hostile.close()
    oversized.close()


def test_a_member_may_join_so_many_groups(net: GroupNet) -> None:
    sock = net.raw()
    try:
        for index in range(33):
            sock.send_multipart([b"J", f"many{index}".encode(), b"many.*", b"8", b"-"])
        replies: Counter[bytes] = Counter()
        deadline = time.monotonic() + 10.0
        while sum(replies.values()) < 33 and sock.poll(int((deadline - time.monotonic()) * 1000)):
            frames = sock.recv_multipart()
            if frames[0] != b"P":
                replies[frames[0]] += 1
        assert replies == {b"J": 32, b"X": 1}, replies
    finally:
        sock.send(b"B")  # leave them all
        sock.close()
    wait_until(lambda: net.stats("many0").get("members") == 0, 10.0, "left on goodbye")


def test_a_group_joined_after_start_from_another_thread(net: GroupNet) -> None:
    """The receiver owns the groups socket then: it makes it on the command, and registers it."""
    bus = ZmqEventBus(net.ctx, "late-joiner", net.xsub, net.xpub, groups_endpoint=net.groups)
    got = Recorder()
    try:
        bus.handshake(10.0)
        bus.start()
        bus.subscribe("thread.*", got, group="thread")
        wait_until(lambda: net.stats("thread").get("members") == 1, 10.0, "joined")
        net.client.publish("thread.job", {"n": 1})
        wait_until(lambda: got.got("thread.job"), 10.0, "delivered")
        bus.unsubscribe("thread.*", got, group="thread")
        wait_until(lambda: net.stats("thread").get("members") == 0, 10.0, "left")
        bus.subscribe("thread.*", got, group="")  # explicitly ungrouped

        def arrived() -> bool:  # the subscription reaches the broker in its own time
            net.client.publish("thread.job", {"n": 2})
            return len(got.events) >= 2

        wait_until(arrived, 10.0, "ungrouped delivery")
        assert net.stats("thread")["delivered"] == 1  # the later ones went past the group
    finally:
        bus.close()


def test_a_member_joins_a_restarted_broker_on_reconnecting_not_after_a_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker of its own (this replaces it). With the rejoin after a silence out of reach,
    only the member's watch of its connection can join the new broker, which knows nobody:
    before, the member waited REJOIN_AFTER (2 s) and the events of that time were lost."""
    monkeypatch.setattr(groups, "REJOIN_AFTER", 3600.0)
    with group_net() as own:
        bus = ZmqEventBus(own.ctx, "rejoiner", own.xsub, own.xpub, groups_endpoint=own.groups)
        got = Recorder()
        try:
            bus.subscribe("again.*", got, group="again", redeliver=True)
            bus.handshake(10.0)
            bus.start()
            own.broker.kill()
            own.broker.wait(10)
            own.start_broker()
            wait_until(
                lambda: own.stats("again").get("members") == 1,
                10.0,
                "the member joined the new broker",
                lambda: str(own.stats()),
            )

            def arrived() -> bool:  # once the client's PUB has the group's subscription too
                own.client.publish("again.job", {"n": 1})
                return got.got("again.job")

            wait_until(arrived, 10.0, "a grouped event through the new broker")
        finally:
            bus.close()


def test_members_join_a_restarted_broker_by_themselves(net: GroupNet) -> None:
    """Last in this file: it replaces the broker process that the others share."""
    where = net.dir / "restart"
    names = ["r1", "r2"]
    for name in names:
        net.member(name, "restart", "restart.*", where)
    net.broker.kill()
    net.broker.wait(10)
    net.start_broker()
    wait_until(lambda: net.stats("restart").get("members") == 2, 15.0, "both joined again")
    net.client.publish("restart.job", {"n": 0})  # once the client's PUB is back as well
    wait_until(lambda: net.everything.got("restart.job"), 10.0, "the bus back")
    for n in range(1, 31):
        net.client.publish("restart.job", {"n": n})
    wanted = {str(n) for n in range(1, 31)}

    def every() -> list[str]:
        return sorted(n for got in _received(where, names).values() for n in got)

    # Job 0 may reach a member too: wait for jobs 1-30 themselves, not for 30 of anything.
    wait_until(lambda: wanted <= set(every()), 10.0, "jobs 1-30 delivered", lambda: str(every()))
    assert len(every()) == len(set(every())), every()  # each once
