"""A send the cluster's SendLedger refused: SendLog refunds and blocks, and throttled lanes
put the page back and hold its recipient (no threads, a hand-moved clock)."""

from __future__ import annotations

import pytest

from pager_actors._lanes import LanesClosed
from tests.unit.test_throttle import WINDOW, Lanes, log_of


def test_a_block_delays_the_next_send_beyond_the_logs_own_budget():
    """A blocked recipient may not be sent to before the block ends, then the log's own
    sends decide again; a later block wins over an earlier one."""
    log = log_of(2)
    log.spend("alice", 0.0)
    log.block("alice", 30.0)
    log.block("alice", 20.0)
    assert log.next_send("alice", 10.0) == 30.0
    assert log.next_send("bob", 10.0) is None
    assert log.next_send("alice", 30.0) is None
    log.spend("alice", 30.0)
    log.block("alice", 40.0)
    assert log.next_send("alice", 35.0) == WINDOW  # the budget ends later than the block


def test_a_refunded_send_no_longer_counts():
    """refund() forgets the last spend only."""
    log = log_of(2)
    log.spend("alice", 0.0)
    log.spend("alice", 10.0)
    assert log.next_send("alice", 20.0) == WINDOW
    log.refund("alice")
    assert log.next_send("alice", 20.0) is None
    log.spend("alice", 20.0)
    assert log.next_send("alice", 30.0) == WINDOW


def test_expired_blocks_of_quiet_recipients_are_forgotten():
    """Blocks that passed are swept with the quiet recipients."""
    log = log_of(1)
    for n in range(3000):
        log.block(f"b{n}", float(n))
        log.spend(f"r{n}", float(n))
        log.refund(f"r{n}")
    assert len(log._blocked) < 3000 and len(log) < 3000


def test_a_deferred_page_goes_back_and_its_recipient_is_held_until_the_ledger_allows():
    """defer(): the page waits again, not counted as sent, held until the instant given; a
    wake-up is asked for then, and it goes out as itself."""
    lanes = Lanes("w1")
    assert lanes.offer(("alice", "p1")) == "w1"
    assert lanes.sends.next_send("alice", 0.0) == WINDOW  # counted when taken
    lanes.now = 5.0
    assert lanes.defer("w1", ("alice", "p1"), 30.0) is None
    assert (lanes.queued, lanes.held, lanes.held_pages, lanes.wakes) == (1, 1, 1, [30.0])
    assert lanes.offer(("bob", "p1")) == "w1"  # others are not held up
    lanes.next("w1")
    lanes.now = 30.0
    assert lanes.wake() == [("w1", ("alice", "p1"))]
    assert (lanes.queued, lanes.held, lanes.held_pages) == (0, 0, 0)
    assert lanes.sends.next_send("alice", 30.0) == 30.0 + WINDOW  # counted once, at 30


def test_pages_that_joined_a_deferred_page_leave_with_it_as_one_bundle():
    """Pages offered while the refused one was in flight, and after, go out in one bundle
    behind it, once the instant given comes."""
    lanes = Lanes("w1", limit=3)
    assert lanes.offer(("alice", "p1")) == "w1"
    lanes.offer(("alice", "p2"))
    assert lanes.defer("w1", ("alice", "p1"), 40.0) is None
    lanes.offer(("alice", "p3"))
    assert (lanes.queued, lanes.held_pages) == (3, 3)
    lanes.now = 40.0
    assert lanes.wake() == [("w1", ("alice", "p1+p2+p3"))]
    assert lanes.held_pages == 0


def test_the_next_job_of_a_deferring_worker_is_another_recipients():
    """defer() hands the worker its next job, as next() does."""
    lanes = Lanes("w1", "w2")
    assert lanes.offer(("alice", "p1")) == "w2"
    assert lanes.offer(("bob", "p1")) is None  # w2 is at work: bob waits for it
    assert lanes.defer("w2", ("alice", "p1"), 10.0) == ("bob", "p1")


def test_a_retry_waiting_behind_a_deferred_page_still_goes_first():
    """A retry that joined while the refused page was in flight keeps its place at the
    front and goes at once; then the recipient is held for the deferred page."""
    lanes = Lanes("w1")
    assert lanes.offer(("alice", "p1")) == "w1"
    lanes.offer(("alice", "retry0"))
    assert lanes.defer("w1", ("alice", "p1"), 20.0) == ("alice", "retry0")
    assert lanes.next("w1") is None
    assert (lanes.held, lanes.held_pages, lanes.wakes) == (1, 1, [20.0])
    lanes.now = 20.0
    assert lanes.wake() == [("w1", ("alice", "p1"))]


def test_a_deferred_page_can_be_withdrawn_while_it_waits():
    """Withdrawal finds the deferred page in its lane; its hold is forgotten."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "x1"))
    lanes.defer("w1", ("alice", "x1"), 30.0)
    assert lanes.withdraw(lambda job: job[1].startswith("x")) == [("alice", "x1")]
    assert (lanes.queued, lanes.held, lanes.held_pages) == (0, 0, 0)
    lanes.now = 30.0
    assert lanes.wake() == []


def test_a_deferred_bundle_waits_and_is_rebundled_with_what_joined_it():
    """A bundle refused goes back whole; it leaves with the pages that came since as one
    bundle (the domain unpacks nested bundles)."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "p1"))
    lanes.offer(("alice", "p2"))
    lanes.offer(("alice", "p3"))
    lanes.next("w1")
    lanes.now = 60.0
    [(_, job)] = lanes.wake()
    assert job == ("alice", "p2+p3")
    assert lanes.defer("w1", job, 90.0) is None
    lanes.offer(("alice", "p4"))
    assert lanes.held_pages == 3
    lanes.now = 90.0
    assert lanes.wake() == [("w1", ("alice", "p2+p3+p4"))]


def test_deferring_after_close_releases_the_worker_and_gives_the_job_back():
    """Closed lanes refuse the job (the caller owns it) and keep nothing."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "p1"))
    assert lanes.close() == []
    with pytest.raises(LanesClosed):
        lanes.defer("w1", ("alice", "p1"), 30.0)
    assert (lanes.queued, lanes.held_pages) == (0, 0)
