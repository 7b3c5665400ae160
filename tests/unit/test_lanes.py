"""DeliveryLanes, the scheduling of sends per recipient, driven without threads."""

from __future__ import annotations

import pytest

from pager_actors._lanes import DeliveryLanes, LanesClosed


class Lanes(DeliveryLanes[str, tuple[str, int]]):
    """Jobs are (recipient, number); workers are names; checks asked for are counted."""

    def __init__(self, *workers: str) -> None:
        self.checks_asked = 0
        super().__init__(lambda job: job[0], self._ask)
        for worker in workers:
            assert self.join(worker) is None

    def _ask(self) -> None:
        self.checks_asked += 1


def test_a_job_goes_straight_to_an_idle_worker_when_nobody_is_at_work():
    """With every worker idle, the offered job is handed to one of them at once."""
    lanes = Lanes("w1", "w2")
    assert lanes.offer(("alice", 1)) == "w2"  # the last one to go idle: the warmest
    assert lanes.queued == 0


def test_a_second_job_for_a_busy_recipient_waits_even_with_idle_workers():
    """At most one job per recipient in flight: the next waits for the first to finish."""
    lanes = Lanes("w1", "w2", "w3")
    worker = lanes.offer(("alice", 1))
    assert lanes.offer(("alice", 2)) is None
    assert lanes.check() == []  # idle workers never take a busy recipient's job
    assert lanes.queued == 1
    assert lanes.next(worker) == ("alice", 2)
    assert lanes.next(worker) is None
    assert lanes.queued == 0


def test_jobs_for_one_recipient_keep_their_order():
    """A recipient's jobs start in the order they were offered."""
    lanes = Lanes("w1")
    assert lanes.offer(("alice", 1)) == "w1"
    for n in range(2, 6):
        assert lanes.offer(("alice", n)) is None
    assert [lanes.next("w1") for _ in range(4)] == [("alice", n) for n in range(2, 6)]


def test_finished_worker_serves_recipients_round_robin():
    """A recipient with a backlog goes behind the others that wait, so none starves."""
    lanes = Lanes("w1")
    lanes.offer(("alice", 1))
    lanes.offer(("alice", 2))
    lanes.offer(("bob", 1))
    lanes.offer(("carol", 1))
    order = [lanes.next("w1") for _ in range(3)]
    assert order == [("bob", 1), ("carol", 1), ("alice", 2)]
    assert lanes.next("w1") is None


def test_a_job_that_waits_while_workers_are_idle_asks_for_one_check():
    """Queued behind a busy worker with others idle: one check is asked for, not one per job."""
    lanes = Lanes("w1", "w2", "w3")
    lanes.offer(("alice", 1))
    assert lanes.offer(("bob", 1)) is None
    assert lanes.offer(("carol", 1)) is None
    assert lanes.checks_asked == 1
    assert lanes.queued == 2


def test_check_starts_waiting_recipients_on_idle_workers_when_the_busy_one_is_stuck():
    """Nothing taken since the check was asked for: every idle worker takes a ready recipient."""
    lanes = Lanes("w1", "w2", "w3")
    stuck = lanes.offer(("alice", 1))
    lanes.offer(("bob", 1))
    lanes.offer(("carol", 1))
    lanes.offer(("dave", 1))
    started = lanes.check()
    assert sorted(job for _, job in started) == [("bob", 1), ("carol", 1)]
    assert {worker for worker, _ in started} == {"w1", "w2", "w3"} - {stuck}
    assert lanes.queued == 1  # dave waits for the first worker to finish


def test_check_leaves_the_work_to_busy_workers_that_keep_up():
    """Waiting jobs taken before the check wake nobody; a newer one gets its own check."""
    lanes = Lanes("w1", "w2")
    worker = lanes.offer(("alice", 1))
    lanes.offer(("bob", 1))
    assert lanes.next(worker) == ("bob", 1)
    lanes.offer(("carol", 1))  # a check is due already: none asked for
    assert lanes.checks_asked == 1
    assert lanes.check() == []
    assert lanes.checks_asked == 2  # carol waits since before this one
    [(idle, job)] = lanes.check()
    assert job == ("carol", 1) and idle != worker


def test_check_with_nothing_waiting_asks_for_no_other():
    """Once the waiting jobs are taken, checks stop."""
    lanes = Lanes("w1", "w2")
    worker = lanes.offer(("alice", 1))
    lanes.offer(("bob", 1))
    assert lanes.next(worker) == ("bob", 1)
    assert lanes.check() == []
    assert lanes.checks_asked == 1


def test_a_new_worker_takes_a_waiting_job_at_once():
    """join() gives a new worker the front recipient's oldest job."""
    lanes = Lanes("w1")
    lanes.offer(("alice", 1))
    lanes.offer(("bob", 1))
    assert lanes.join("w2") == ("bob", 1)


def test_retired_worker_releases_its_recipient_and_its_job_goes_first():
    """A crashed worker's unfinished job is first again in its lane, then the later ones."""
    lanes = Lanes("w1", "w2")
    crashed = lanes.offer(("alice", 1))
    lanes.offer(("alice", 2))
    [(worker, job)] = lanes.retire(crashed, [("alice", 1)])
    assert (worker, job) == ("w1" if crashed == "w2" else "w2", ("alice", 1))
    assert lanes.next(worker) == ("alice", 2)
    assert lanes.next(worker) is None


def test_retired_worker_with_no_unfinished_job_frees_its_recipient():
    """A worker gone after its port call frees its recipient: the next job can start."""
    lanes = Lanes("w1")
    lanes.offer(("alice", 1))
    lanes.offer(("alice", 2))
    assert lanes.retire("w1") == []
    assert lanes.join("w2") == ("alice", 2)


def test_retired_idle_worker_is_never_handed_a_job():
    """An idle worker that stopped is out of the pool."""
    lanes = Lanes("w1", "w2")
    assert lanes.retire("w2") == []
    assert lanes.offer(("alice", 1)) == "w1"
    assert lanes.offer(("bob", 1)) is None
    assert lanes.check() == []


def test_closed_lanes_refuse_jobs_and_return_the_waiting_ones():
    """close() hands back every job not started; offers then raise, workers get nothing."""
    lanes = Lanes("w1")
    lanes.offer(("alice", 1))
    lanes.offer(("alice", 2))
    lanes.offer(("bob", 1))
    assert sorted(lanes.close()) == [("alice", 2), ("bob", 1)]
    assert lanes.queued == 0
    with pytest.raises(LanesClosed):
        lanes.offer(("carol", 1))
    assert lanes.next("w1") is None
    with pytest.raises(LanesClosed):
        lanes.retire("w1", [("alice", 1)])
