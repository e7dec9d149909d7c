"""Tests of module_sdk.sequence: counting lost events from publishers' sequence numbers, and
refusing numbers that no publisher could have sent."""

from __future__ import annotations

import time

from module_sdk.sequence import (
    CLOCK_AHEAD,
    GAP_SLACK,
    MAX_RATE,
    MAX_WINDOW,
    SYNCS_PER_TICK,
    GapCounter,
    SyncSchedule,
)

T = time.time() - 7200.0  # two hours ago: every window below is in the past
TOPIC = b"test.ping"


def test_a_gap_counts_the_events_in_it() -> None:
    gaps = GapCounter()
    for seq in (1, 2, 5, 6, 9):
        assert gaps.event("p-1", TOPIC, seq, T)
    assert gaps.dropped == 4


def test_publishers_and_topics_number_their_events_separately() -> None:
    gaps = GapCounter()
    assert gaps.event("a-1", TOPIC, 1, T)
    assert gaps.event("b-1", TOPIC, 1, T)
    assert gaps.event("a-2", b"test.pong", 7, T)
    assert gaps.event("a-3", TOPIC, 2, T)
    assert gaps.event("b-2", TOPIC, 2, T)
    assert gaps.event("solo", TOPIC, 5, T)  # an id without "-" names no publisher
    assert gaps.event("solo2", TOPIC, 9, T)
    assert gaps.dropped == 0


def test_a_forged_jump_to_ten_to_the_eighteen_is_refused_and_changes_nothing() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    assert not gaps.event("p-2", TOPIC, 10**18, T + 0.001)
    assert not gaps.event("p-2", TOPIC, 10**18, T + 10**12)  # a clock far ahead changes nothing
    assert gaps.dropped == 0
    assert gaps.event("p-3", TOPIC, 2, T + 0.002)  # the baseline is where it was
    assert gaps.dropped == 0
    assert gaps.event("p-4", TOPIC, 5, T + 0.003)
    assert gaps.dropped == 2


def test_a_jump_is_allowed_what_the_publisher_could_have_sent_meanwhile() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    allowed = int(MAX_RATE * 0.5) + GAP_SLACK
    assert not gaps.event("p-2", TOPIC, 1 + allowed + 2, T + 0.5)
    assert gaps.event("p-2", TOPIC, 1 + allowed + 1, T + 0.5)  # exactly `allowed` lost
    assert gaps.dropped == allowed


def test_an_honest_stall_of_a_minute_counts_every_event_lost() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    assert gaps.event("p-2", TOPIC, 60_000_001, T + 60.0)  # a million a second for a minute
    assert gaps.dropped == 59_999_999


def test_the_window_is_at_most_an_hour() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T - 10 * MAX_WINDOW)
    assert not gaps.event("p-2", TOPIC, int(MAX_RATE * MAX_WINDOW) + GAP_SLACK + 10, T)
    assert gaps.dropped == 0


def test_a_number_that_goes_back_is_a_new_baseline() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 100, T)
    assert gaps.event("p-2", TOPIC, 3, T)  # forged or not: no drops, and no event is silenced
    assert gaps.event("p-3", TOPIC, 4, T)
    assert gaps.dropped == 0


def test_a_sync_counts_the_events_lost_after_the_last_one_seen() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    assert gaps.event("p-2", TOPIC, 2, T)
    assert gaps.sync("p-", TOPIC, 5, T + 1)  # 3, 4 and 5 never came
    assert gaps.dropped == 3
    assert gaps.sync("p-", TOPIC, 5, T + 2)  # repeated: nothing new
    assert gaps.sync("p-", TOPIC, 4, T + 2)  # stale: nothing
    assert gaps.event("p-6", TOPIC, 6, T + 3)
    assert gaps.dropped == 3


def test_a_sync_from_an_unknown_publisher_is_a_baseline() -> None:
    gaps = GapCounter()
    assert gaps.sync("p-", TOPIC, 40, T)
    assert gaps.dropped == 0
    assert gaps.event("p-41", TOPIC, 41, T + 1)
    assert gaps.event("p-44", TOPIC, 44, T + 1)
    assert gaps.dropped == 2


def test_an_implausible_sync_is_refused() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    assert not gaps.sync("p-", TOPIC, 10**18, T)
    assert gaps.dropped == 0
    assert gaps.event("p-2", TOPIC, 2, T)
    assert gaps.dropped == 0


def test_forget_starts_new_baselines() -> None:
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    gaps.forget()
    assert gaps.event("p-9", TOPIC, 9, T)
    assert gaps.dropped == 0


def test_a_topic_is_synced_when_it_changed_then_at_growing_intervals() -> None:
    schedule = SyncSchedule()
    seqs = {TOPIC: 5}
    ticks = [n for n in range(300) if schedule.due(seqs)]
    assert ticks == [0, 1, 3, 7, 15, 31, 63, 127, 255]
    seqs[TOPIC] = 9  # it published again: synced at once, and the intervals start again
    assert schedule.due(seqs) == [(TOPIC, 9)]
    assert schedule.due(seqs) == [(TOPIC, 9)]
    assert schedule.due(seqs) == []


def test_syncs_per_tick_are_bounded_and_the_rest_follow() -> None:
    schedule = SyncSchedule()
    seqs = {f"t.{n}".encode(): 1 for n in range(SYNCS_PER_TICK + 10)}
    ticks = [schedule.due(seqs) for _ in range(3)]
    assert all(len(due) <= SYNCS_PER_TICK for due in ticks)
    assert {topic for due in ticks for topic, _ in due} == set(seqs)


def test_many_forged_publishers_together_claim_no_more_than_could_have_been_sent() -> None:
    gaps = GapCounter()
    now = time.time()
    for n in range(2000):  # each a fresh publisher claiming an hour-old baseline
        prefix = f"forger{n}-x-"
        gaps.event(f"{prefix}1", TOPIC, 1, now - 3600)
        gaps.event(f"{prefix}2", TOPIC, 3 * 10**10, now + 59)
    assert gaps.dropped <= MAX_RATE * (CLOCK_AHEAD + 60) + GAP_SLACK  # not 2000 x 3e10


def test_the_numbers_before_the_first_one_seen_count_once_a_sync_says_they_were_ours() -> None:
    gaps = GapCounter()
    begun = time.time() + 10.0  # the publisher began the topic after we subscribed
    assert gaps.event("p-5", TOPIC, 5, begun + 1.0)
    assert gaps.dropped == 0  # not known yet: lost, or sent before we subscribed?
    assert gaps.sync("p-", TOPIC, 5, begun + 2.0, first=begun)
    assert gaps.dropped == 4
    assert gaps.sync("p-", TOPIC, 5, begun + 3.0, first=begun)
    assert gaps.dropped == 4  # once


def test_a_topic_begun_before_we_subscribed_counts_nothing_before_the_first_seen() -> None:
    gaps = GapCounter()
    assert gaps.event("p-5", TOPIC, 5, T)
    assert gaps.sync("p-", TOPIC, 5, T + 1.0, first=T)
    assert gaps.sync("q-", b"test.other", 9, T + 1.0, first=T)  # nothing seen of it at all
    assert gaps.event("p-6", TOPIC, 6, T + 2.0)
    assert gaps.dropped == 0


def test_a_sync_without_a_first_time_leaves_the_baseline_as_it_was() -> None:
    gaps = GapCounter()
    later = time.time() + 10.0
    assert gaps.event("p-5", TOPIC, 5, later)
    assert gaps.sync("p-", TOPIC, 5, later)  # an older publisher: it does not say
    assert gaps.dropped == 0


def test_every_event_of_a_topic_begun_after_we_subscribed_and_all_lost_counts() -> None:
    gaps = GapCounter()
    begun = time.time() + 10.0
    assert gaps.sync("p-", TOPIC, 3, begun + 1.0, first=begun)
    assert gaps.dropped == 3
    assert gaps.event("p-4", TOPIC, 4, begun + 2.0)
    assert gaps.dropped == 3


def test_a_first_time_cannot_claim_more_than_could_be_sent_since() -> None:
    gaps = GapCounter()
    begun = time.time() + 10.0
    assert gaps.event("p-1000000000", TOPIC, 1_000_000_000, begun)
    assert not gaps.sync("p-", TOPIC, 1_000_000_000, begun, first=begun)  # no time to send them
    assert gaps.dropped == 0


def test_a_forged_low_number_with_a_far_future_time_does_not_block_the_real_events() -> None:
    """A forger who knows a publisher's id prefix sent seq 1 with time 1e18: the baseline went
    back to 1 and its time far ahead, so the publisher's next real event was an implausible
    jump, dropped, and so was every one after it."""
    gaps = GapCounter()
    now = time.time()
    for seq in range(1, 20_366):
        assert gaps.event(f"p-{seq:x}", TOPIC, seq, now)
    assert gaps.event("p-ffffffff", TOPIC, 1, 1e18)  # the forgery: delivered, moves nothing
    assert gaps.event("p-5000", TOPIC, 20_366, time.time())
    assert gaps.event("p-5001", TOPIC, 20_367, time.time())
    assert gaps.dropped == 0


def test_a_late_event_neither_moves_the_baseline_back_nor_counts_twice() -> None:
    gaps = GapCounter()
    for seq in (1, 2, 3, 5):  # 4 late: counted as lost when 5 came
        assert gaps.event(f"p-{seq}", TOPIC, seq, T)
    assert gaps.event("p-4", TOPIC, 4, T)
    assert gaps.event("p-6", TOPIC, 6, T)
    assert gaps.dropped == 1  # not 2: 5 is not missing again


def test_a_time_ahead_of_ours_is_kept_as_ours() -> None:
    """A forged far-future time must not shrink the window of the publisher's next real gap
    to nothing (a large real loss would then be judged implausible)."""
    gaps = GapCounter()
    assert gaps.event("p-1", TOPIC, 1, T)
    assert gaps.event("p-2", TOPIC, 2, 1e18)
    assert gaps.event("p-9", TOPIC, 3 + 5 * GAP_SLACK, time.time() + 1.0)
    assert gaps.dropped == 5 * GAP_SLACK
