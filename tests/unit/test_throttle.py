"""Per-contact throttles: the SendLog budget and throttled DeliveryLanes, driven without
threads on a hand-moved clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pager_actors._lanes import DeliveryLanes, Holding
from pager_actors._throttle import SendLog, Throttle, Throttling

WINDOW = 60.0


def log_of(limit: int) -> SendLog:
    return SendLog(Throttle(limit, timedelta(seconds=WINDOW)))


# -- the budget ------------------------------------------------------------------


def test_a_recipient_may_send_its_budget_then_waits_for_the_oldest_send_to_age_out():
    """max 2 per 60 s: two sends go, the third may go 60 s after the first (not before)."""
    log = log_of(2)
    assert log.next_send("alice", 0.0) is None
    log.spend("alice", 0.0)
    assert log.next_send("alice", 10.0) is None
    log.spend("alice", 10.0)
    assert log.next_send("alice", 59.9) == 60.0
    assert log.next_send("bob", 59.9) is None  # per recipient
    assert log.next_send("alice", 60.0) is None  # the window is half-open


def test_sends_rebuilt_from_the_store_count_like_sends_made_here():
    """Loaded sends (any order) restrict as their own spends would; only the last `max`
    matter."""
    log = log_of(1)
    log.load([("alice", 30.0), ("alice", 5.0), ("bob", -61.0)])
    assert log.next_send("alice", 40.0) == 90.0
    assert log.next_send("bob", 0.0) is None


def test_quiet_recipients_are_forgotten():
    """A recipient whose sends all aged out is not remembered for ever."""
    log = log_of(1)
    for n in range(3000):
        log.spend(f"r{n}", float(n))
    assert len(log) < 3000
    assert log.next_send("r2999", 2999.0) == 2999.0 + WINDOW


def test_a_throttle_needs_a_budget_and_a_window():
    """Nonsense limits are refused; Throttling names each channel's."""
    with pytest.raises(ValueError, match="max_per_contact"):
        Throttle(0, timedelta(seconds=1))
    with pytest.raises(ValueError, match="window"):
        Throttle(1, timedelta(0))
    sms = Throttle(1, timedelta(minutes=1))
    both = Throttling(sms=sms, mail=Throttle(10, timedelta(minutes=2)))
    assert both.of("sms") is sms and both.of("timer") is None
    assert both.longest == timedelta(minutes=2)


# -- throttled lanes ---------------------------------------------------------------

Job = tuple[str, str]  # (recipient, what): "retry…" is a retry, "a+b" a bundle of a and b


class Lanes(DeliveryLanes[str, Job]):
    """Throttled lanes on a clock the test moves; wake-ups asked for and pages held are
    recorded."""

    def __init__(self, *workers: str, limit: int = 1) -> None:
        self.now = 0.0
        self.wakes: list[float] = []  # instants wake-ups were asked for
        self.held_pages = 0
        self.sends = log_of(limit)
        super().__init__(lambda job: job[0], lambda: None, Holding(
            self.sends, lambda: self.now, lambda delay: self.wakes.append(self.now + delay),
            self._bundle, lambda job: job[1].startswith("retry"),
            lambda job: job[1].count("+") + 1, self._held))
        for worker in workers:
            assert self.join(worker) is None

    @staticmethod
    def _bundle(jobs: list[Job]) -> Job:
        return jobs[0][0], "+".join(what for _, what in jobs)

    def _held(self, pages: int) -> None:
        self.held_pages += pages


def test_over_its_budget_a_recipient_is_held_until_the_window_allows():
    """The second page in the window waits; one wake-up is asked for at the instant the
    window allows, and the held page is reported as held."""
    lanes = Lanes("w1", "w2")
    assert lanes.offer(("alice", "p1")) == "w2"
    assert lanes.next("w2") is None
    lanes.now = 5.0
    assert lanes.offer(("alice", "p2")) is None
    assert lanes.offer(("bob", "p1")) == "w2"  # others are not held up
    assert lanes.wakes == [60.0]
    assert (lanes.queued, lanes.held, lanes.held_pages) == (1, 1, 1)


def test_pages_that_wait_while_the_budget_is_spent_go_out_as_one_bundle():
    """Pages offered while the first is in flight are held once it finishes; the wake-up
    hands all of them to an idle worker as one job, counted as one send."""
    lanes = Lanes("w1")
    assert lanes.offer(("alice", "p1")) == "w1"
    for n in range(2, 5):
        assert lanes.offer(("alice", f"p{n}")) is None
    assert lanes.next("w1") is None  # held, not handed
    assert lanes.held_pages == 3 and lanes.wakes == [60.0]
    lanes.now = 59.0
    assert lanes.wake() == []  # early: nothing moves (a stray wake-up asks for the right one)
    assert lanes.wakes == [60.0, 60.0]
    lanes.now = 60.0
    assert lanes.wake() == [("w1", ("alice", "p2+p3+p4"))]
    assert (lanes.queued, lanes.held, lanes.held_pages) == (0, 0, 0)
    assert lanes.sends.next_send("alice", 60.0) == 120.0  # the bundle counted once


def test_a_single_page_that_waited_goes_out_as_itself():
    """Released with one page waiting: no bundle."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "p1"))
    lanes.next("w1")
    lanes.offer(("alice", "p2"))
    lanes.now = 60.0
    assert lanes.wake() == [("w1", ("alice", "p2"))]


def test_with_budget_left_pages_go_one_by_one_and_only_those_over_it_are_bundled():
    """max 3: three pages go as themselves, the rest wait for the window as one bundle."""
    lanes = Lanes("w1", limit=3)
    assert lanes.offer(("alice", "p1")) == "w1"
    for n in range(2, 7):
        lanes.offer(("alice", f"p{n}"))
    assert [lanes.next("w1") for _ in range(3)] == [("alice", "p2"), ("alice", "p3"), None]
    assert lanes.held_pages == 3
    lanes.now = 60.0
    assert lanes.wake() == [("w1", ("alice", "p4+p5+p6"))]


def test_one_wake_up_is_asked_for_the_earliest_hold_and_then_the_next():
    """Held recipients share the wake-ups: the earliest is asked for, then the next one."""
    lanes = Lanes("w1")
    for now, who in ((0.0, "alice"), (10.0, "bob")):
        lanes.now = now
        lanes.offer((who, "p1"))
        lanes.next("w1")
    lanes.now = 20.0
    lanes.offer(("bob", "p2"))
    lanes.offer(("alice", "p2"))
    assert lanes.wakes == [70.0, 60.0]  # bob's first; alice's is earlier, so asked too
    lanes.now = 60.0
    assert lanes.wake() == [("w1", ("alice", "p2"))]
    assert lanes.wakes[-1] == 70.0 and lanes.held_pages == 1


def test_withdrawn_pages_leave_a_bundle_that_has_not_gone_out():
    """Withdrawal takes the matching waiting pages out (held ones stop counting as held); a
    recipient left with nothing forgets its hold."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "p1"))
    lanes.offer(("alice", "x2"))
    lanes.offer(("alice", "p3"))
    lanes.next("w1")
    lanes.offer(("bob", "x1"))
    assert lanes.next("w1") is None  # bob's page went; bob is free again
    assert lanes.withdraw(lambda job: job[1].startswith("x")) == [("alice", "x2")]
    assert (lanes.queued, lanes.held_pages) == (1, 1)
    lanes.now = 60.0
    assert lanes.wake() == [("w1", ("alice", "p3"))]
    lanes.next("w1")
    lanes.offer(("carol", "x1"))
    lanes.offer(("carol", "x2"))
    lanes.next("w1")
    assert len(lanes.withdraw(lambda job: job[1].startswith("x"))) == 1
    assert lanes.queued == 0 and lanes.held_pages == 0
    lanes.now = 200.0
    assert lanes.wake() == []


def test_withdrawal_looks_only_in_the_lanes_it_is_told_of():
    """With recipients named, other lanes are left alone (an incident's pages wait only in
    its paged contacts' lanes)."""
    lanes = Lanes("w1")
    for who in ("alice", "bob"):
        lanes.offer((who, "x1"))
        lanes.next("w1")
        lanes.offer((who, "x2"))
    assert lanes.withdraw(lambda job: True, ["bob", "carol", "bob"]) == [("bob", "x2")]
    assert lanes.queued == 1 and lanes.held_pages == 1


def test_a_page_a_worker_took_is_never_withdrawn():
    """Only waiting pages can be withdrawn."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "x1"))
    assert lanes.withdraw(lambda job: True) == []
    assert lanes.next("w1") is None


def test_a_retry_neither_waits_for_the_window_nor_counts():
    """A held recipient's retry goes at once, ahead of what waits, and spends nothing; the
    recipient is held again after it."""
    lanes = Lanes("w1")
    lanes.offer(("alice", "p1"))
    lanes.offer(("alice", "p2"))
    assert lanes.next("w1") is None and lanes.held_pages == 1
    lanes.now = 3.0
    assert lanes.offer(("alice", "retry p1")) is None  # queued as ready, not held
    assert lanes.held_pages == 0
    assert lanes.check() == [("w1", ("alice", "retry p1"))]
    assert lanes.next("w1") is None
    assert lanes.held_pages == 1 and lanes.sends.next_send("alice", 3.0) == 60.0


def test_closing_hands_back_held_pages_apart():
    """close(held) returns the jobs not started, the held ones in `held`, none counted held."""
    lanes = Lanes("w1", "w2")
    lanes.offer(("alice", "p1"))
    lanes.offer(("alice", "p2"))
    lanes.next("w2")
    lanes.offer(("bob", "p1"))
    lanes.offer(("bob", "p2"))
    held: list[Job] = []
    assert lanes.close(held) == [("bob", "p2")]
    assert held == [("alice", "p2")] and lanes.held_pages == 0
