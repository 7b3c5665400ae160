"""Group commit: a transition the store refuses fails its own service only; a store that
refuses every write (disk full) shows on readiness until it takes writes again."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.sqlite import SqliteStore
from adapters.timer import ThreadedTimer
from pager_actors import Pager
from pager_actors._commit import Barrier, Commit, GroupCommitter, StoreHealth, StoreWriter
from pager_actors._future import CommandFuture
from pager_actors._registry import Supervision
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


def test_after_a_refusal_the_services_next_commits_fail_until_it_is_reloaded(tmp_path):
    """A command decided on top of a refused change (even one that changes nothing, as a
    duplicate alert) is not answered from that state: it fails until the reload barrier."""
    store = SqliteStore(tmp_path / "pager.db")
    work = WorkTracker()
    lost: list[str] = []
    writer = StoreWriter.start(store, RecordingDispatcher(work), work, lost.append,
                               StoreHealth())
    committer = GroupCommitter(writer)
    refused = commit_for("bad", opened_before=2**63)
    ignored = Commit("bad", None, (), CommandFuture(), "ignored duplicate")
    work.begin(3)
    committer.submit(refused)
    with pytest.raises(TransitionRefusedError):
        refused.future.get(timeout=5)
    committer.submit(ignored)  # a later batch, decided on the refused state
    with pytest.raises(TransitionRefusedError, match="reloaded"):
        ignored.future.get(timeout=5)
    reloaded = threading.Event()
    committer.barrier(Barrier("bad", lambda _: reloaded.set()))  # the registry's resync
    assert reloaded.wait(5)
    fresh = commit_for("bad")
    committer.submit(fresh)
    assert fresh.future.get(timeout=5) == "bad"
    writer.stop()
    store.close()


def test_a_failed_batch_reloads_a_service_whose_change_came_after_a_read(tmp_path):
    """A status read, then a change, of one service in a batch the store refuses: the
    change was lost, so the service is reloaded (its timers armed again), not forgotten."""
    store = RefusingStore(tmp_path / "pager.db")
    store.refusing = True
    work = WorkTracker()
    lost: list[str] = []
    writer = StoreWriter.start(store, RecordingDispatcher(work), work, lost.append,
                               StoreHealth())
    committer = GroupCommitter(writer)
    gate, held = threading.Event(), threading.Event()

    def hold(_):
        held.set()
        gate.wait(10)

    committer.barrier(Barrier("gate", hold))  # the two commits below form one batch
    assert held.wait(5)
    read, change = Commit("svc", None, (), CommandFuture(), "status"), commit_for("svc")
    work.begin(2)
    committer.submit(read)
    committer.submit(change)
    gate.set()
    for commit in (read, change):
        with pytest.raises(StoreError, match="disk full"):
            commit.future.get(timeout=5)
    assert lost == ["svc"]
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
    refused = 0

    def commit(self, transitions, deliveries=()):
        if self.refusing and transitions:
            self.refused += 1
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


def accepted(send):
    """Send until the pager takes it: right after a refusal, the service is being reloaded
    and says to send again."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return send()
        except TransitionRefusedError:
            assert time.monotonic() < deadline, "never accepted after the reload"
            time.sleep(0.01)


def test_a_refusal_that_keeps_coming_back_backs_off_instead_of_spinning(policies, tmp_path):
    """An overdue timeout whose commit keeps being refused is retried with a growing delay,
    not in a loop, and escalates once the store takes writes again."""
    store, timer, sms = RefusingStore(tmp_path / "pager.db"), ThreadedTimer(), \
        RecordingSmsSender()
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=sms, timer=timer,
                        store=store, ack_timeout=timedelta(milliseconds=200))
    try:
        store.refusing = True  # from the alert on: each reload re-arms an overdue timeout
        with pytest.raises(StoreError):
            pager.alert("checkout", "down").get(timeout=5)
        store.refusing = False
        accepted(lambda: pager.alert("checkout", "down").get(timeout=5))
        store.refusing = True
        time.sleep(1.5)  # what the refusals do meanwhile is what this test is about
        assert store.refused <= 12, f"{store.refused} refused commits in 1.5 s: a spin"
        store.refusing = False
        deadline = time.monotonic() + 15  # the next retry comes within backoff_max
        while not any(m.to == "+33600000002" for m in sms.sent):
            assert time.monotonic() < deadline, "level 2 was never paged"
            time.sleep(0.01)
    finally:
        pager.stop()
        timer.close()
        store.close()


class CrashingPolicies(InMemoryPolicyRepository):
    """Policies whose next lookup from a service actor raises: that actor crashes."""

    crash_next = False

    def get(self, service_id):
        if self.crash_next and threading.current_thread().name.startswith("ServiceActor"):
            self.crash_next = False
            raise RuntimeError("injected crash")
        return super().get(service_id)


def refuse_twice(pager: Pager, store: RefusingStore) -> None:
    """Two refusals in a row: the next reload of `checkout` waits 4 x backoff_base."""
    for _ in range(2):
        store.refusing = True
        with pytest.raises(StoreError):
            pager.alert("checkout", "down").get(timeout=5)
        store.refusing = False
        accepted(lambda: pager.healthy("checkout").get(timeout=5))


def test_a_crash_restart_waits_for_the_reload_of_a_refused_service(tmp_path):
    """An actor that crashed while its commit was being refused restarts only from the
    reloaded state, never from the refused one: the service takes alerts again after."""
    policies = CrashingPolicies([two_level_policy("checkout")])
    store, sms = RefusingStore(tmp_path / "pager.db"), RecordingSmsSender()
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=sms,
                        timer=ManualTimer(), store=store,
                        supervision=Supervision(backoff_base=0.5, jitter=lambda: 1.0))
    try:
        refuse_twice(pager, store)
        gate, held = threading.Event(), threading.Event()

        def hold(_):
            held.set()
            gate.wait(10)

        pager._committer.barrier(Barrier("gate", hold))
        assert held.wait(5)
        store.refusing = True
        opened = pager.stats().get("opened", 0)
        refused = pager.alert("checkout", "down")  # decided, its commit waits at the gate
        deadline = time.monotonic() + 5
        while pager.stats().get("opened", 0) == opened:
            assert time.monotonic() < deadline, "the alert was never decided"
            time.sleep(0.01)
        policies.crash_next = True
        pager.alert("checkout", "other", key="k2")  # crashes the actor: restart in 0.5 s
        deadline = time.monotonic() + 5
        while pager.stats().get("service_restarts", 0) == 0:
            assert time.monotonic() < deadline, "the actor never crashed"
            time.sleep(0.01)
        gate.set()  # the refusal comes while no actor runs: its reload waits 2 s
        with pytest.raises(StoreError):
            refused.get(timeout=5)
        store.refusing = False
        outcome = accepted(lambda: pager.alert("checkout", "again", key="k3").get(timeout=5))
        assert outcome.event in ("incident_opened", "alert_added")
    finally:
        pager.stop()
        store.close()


def test_reads_wait_for_the_reload_instead_of_showing_a_refused_state(tmp_path):
    """While a refused service waits for its reload, its state is not read from the change
    the store refused: the read waits, then shows what the store holds."""
    store = RefusingStore(tmp_path / "pager.db")
    pager = Pager.start(policies=InMemoryPolicyRepository([two_level_policy("checkout")]),
                        mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store,
                        supervision=Supervision(backoff_base=0.5, jitter=lambda: 1.0))
    try:
        refuse_twice(pager, store)
        store.refusing = True
        with pytest.raises(StoreError):
            pager.alert("checkout", "down").get(timeout=5)
        store.refusing = False
        shown = accepted(lambda: pager.state("checkout", timeout=10))
        assert shown.incident is None
        assert store.load("checkout") is None  # no alert was ever stored
    finally:
        pager.stop()
        store.close()
