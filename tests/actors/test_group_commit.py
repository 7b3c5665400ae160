"""Group commit: a transition the store refuses fails its own service only; a store that
refuses every write (disk full) shows on readiness until it takes writes again."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import ManualTimer, RecordingMailSender, RecordingSmsSender
from adapters.sqlite import SqliteStore
from pager_actors import Pager
from pager_actors._commit import Barrier, Commit, GroupCommitter, StoreHealth, StoreWriter
from pager_actors._future import CommandFuture
from pager_actors._work import WorkTracker
from pager_actors.domain import MonitoredService, RaiseAlert, decide
from pager_actors.ports import (
    PermanentDeliveryError,
    StoreError,
    Transition,
    TransitionRefusedError,
)
from tests.conftest import two_level_policy


class RecordingDispatcher:
    """Stands in for the adapter actors: records the effects released after each commit."""

    def __init__(self, work: WorkTracker) -> None:
        self.work = work
        self.released: list[str] = []

    def dispatch(self, effects, settled=0):
        self.work.add(-settled)
        self.released.extend(e.service_id for e in effects)


def commit_for(service_id: str, opened_before: int = 0) -> Commit:
    """A commit opening an incident; past 2**63 incidents SQLite cannot store its number."""
    decision = decide(MonitoredService(service_id, None, opened_before), RaiseAlert("down"),
                      two_level_policy(service_id), now=datetime(2026, 11, 30, tzinfo=UTC),
                      ack_timeout=timedelta(minutes=15))
    return Commit(service_id, Transition(0, decision.service, decision.effects),
                  decision.effects, CommandFuture(), service_id)


def test_a_refused_transition_fails_only_its_own_command(tmp_path):
    """In one batch, the transition SQLite cannot hold (an integer past 64 bits) fails alone;
    the others commit and page."""
    store = SqliteStore(tmp_path / "pager.db")
    work = WorkTracker()
    dispatcher = RecordingDispatcher(work)
    lost: list[str] = []
    writer = StoreWriter.start(store, dispatcher, work, lost.append, StoreHealth())
    committer = GroupCommitter(writer)
    gate, held = threading.Event(), threading.Event()

    def hold(_):
        held.set()
        gate.wait(10)

    committer.barrier(Barrier("gate", hold))  # the writer waits here; the batch piles up
    assert held.wait(5)
    commits = [commit_for("alpha"), commit_for("bad", opened_before=2**63),
               commit_for("omega")]
    work.begin(len(commits))
    for commit in commits:
        committer.submit(commit)
    gate.set()
    assert commits[0].future.get(timeout=5) == "alpha"
    assert commits[2].future.get(timeout=5) == "omega"
    with pytest.raises(TransitionRefusedError) as refused:
        commits[1].future.get(timeout=5)
    assert "alpha" not in str(refused.value) and "omega" not in str(refused.value)
    assert lost == ["bad"]
    assert sorted(set(dispatcher.released)) == ["alpha", "omega"]
    assert store.load("alpha") is not None and store.load("bad") is None
    writer.stop()
    store.close()


def writer_passed(pager: Pager) -> None:
    """Wait until the store writer handled everything queued so far (it is FIFO)."""
    passed = threading.Event()
    pager._committer.barrier(Barrier("probe-wait", lambda _: passed.set()))
    assert passed.wait(5)


def test_a_full_disk_makes_the_pager_unready_until_writes_work_again(policies, tmp_path):
    """store_problem() names 'disk full' while commits fail, and None once a probe succeeds."""
    store = SqliteStore(tmp_path / "pager.db")
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    try:
        assert pager.store_problem() is None
        store._writer.execute("VACUUM")  # no free page left to write into,
        store._writer.execute("PRAGMA max_page_count = 1")  # and no new one: a full disk
        with pytest.raises(StoreError, match="disk full"):
            pager.alert("checkout", "x" * 5000).get(timeout=5)
        assert "disk full" in (pager.store_problem() or "")  # and asks for a probe
        writer_passed(pager)
        assert "disk full" in (pager.store_problem() or "")  # the probe failed; one more
        writer_passed(pager)
        store._writer.execute("PRAGMA max_page_count = 1073741823")
        pager.store_problem()  # asks for a probe, which now succeeds
        writer_passed(pager)
        assert pager.store_problem() is None
        assert pager.alert("checkout", "back").get(timeout=5).event == "incident_opened"
    finally:
        pager.stop()
        store.close()


class MailWithBadText(RecordingMailSender):
    """A gateway whose error text decodes to a lone surrogate (JSON allows one)."""

    def send_mail(self, to, subject, body):
        raise PermanentDeliveryError("550 \ud800 mailbox unavailable for " + to)


def test_a_gateway_error_that_cannot_be_stored_blocks_no_commit(policies, tmp_path):
    """The error is recorded storable (and masked); every later commit still goes through."""
    store = SqliteStore(tmp_path / "pager.db")
    pager = Pager.start(policies=policies, mail=MailWithBadText(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    try:
        pager.alert("checkout", "down").get(timeout=5)
        pager.flush(timeout=5)
        assert pager.alert("search", "down").get(timeout=5).event == "incident_opened"
        pager.flush(timeout=5)
        assert pager.store_problem() is None
        failed = [row for row in store.outbox() if row["status"] == "failed"]
        assert len(failed) == 2 and all("o***@example.com" in r["last_error"] for r in failed)
        assert "?" in failed[0]["last_error"]
    finally:
        pager.stop()
        store.close()


class RefusingStore(SqliteStore):
    """A SQLite store that refuses transitions while `refusing` is set (as a full disk)."""

    refusing = False

    def commit(self, transitions, deliveries=()):
        if self.refusing and transitions:
            raise StoreError("commit failed: disk full (injected)")
        super().commit(transitions, deliveries)


def test_a_timer_whose_commit_failed_is_armed_again(policies, tmp_path):
    """A timeout consumed by a refused commit is not lost: the reloaded service re-arms it."""
    store, timer = RefusingStore(tmp_path / "pager.db"), ManualTimer()
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=timer, store=store, ack_timeout=timedelta(minutes=15))
    try:
        pager.alert("checkout", "down").get(timeout=5)
        pager.flush(timeout=5)
        [armed] = timer.pending()
        store.refusing = True
        [fired] = timer.advance(timedelta(minutes=15))
        with pytest.raises(StoreError, match="disk full"):
            fired.get(timeout=5)
        store.refusing = False
        deadline = time.monotonic() + 10  # the reload runs behind the writer: watch for it
        while not any(t.token == armed.token for t in timer.pending()):
            assert time.monotonic() < deadline, "the refused timeout was never armed again"
            time.sleep(0.01)
        [again] = timer.advance(timedelta(minutes=15))  # re-armed with the real time left
        assert again.get(timeout=5).event == "escalated"
    finally:
        pager.stop()
        store.close()
