"""Regressions found in review: a store error must not kill the writer, an overdue timeout
must fire after a restart with the real timer, and a clean stop must leave no page pending."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import ManualTimer, RecordingMailSender, RecordingSmsSender
from adapters.sqlite import SqliteStore
from adapters.timer import ThreadedTimer
from pager_actors import Pager
from pager_actors.ports import StoreError
from tests.conftest import two_level_policy


class StoreFailingOnce(SqliteStore):
    """Raises a non-StoreError (as a driver bug or an encoding error would) on one commit."""

    def __init__(self, path, victim):
        super().__init__(path)
        self.victim, self.failed = victim, False
        self.calls = 0

    def commit(self, transitions, deliveries=()):
        self.calls += 1
        if not self.failed and any(t.state.service_id == self.victim for t in transitions):
            self.failed = True
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        super().commit(transitions, deliveries)


def test_writer_survives_an_unexpected_store_error(policies, tmp_path):
    """The failing command gets a StoreError; the writer keeps committing for everyone."""
    store = StoreFailingOnce(tmp_path / "p.db", victim="checkout")
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    with pytest.raises(StoreError, match="commit failed"):
        pager.alert("checkout", "first").get(timeout=5)
    assert pager.alert("search", "other service").get(timeout=5).event == "incident_opened"
    assert pager.alert("checkout", "again").get(timeout=5).event == "incident_opened"
    pager.flush(timeout=5)
    pager.stop()
    store.close()


def test_group_commit_uses_fewer_transactions_than_commands(policies, tmp_path):
    """200 alerts from 8 threads commit in fewer than 200 transactions."""
    for i in range(200):
        policies.put(two_level_policy(f"svc-{i}"))
    store = StoreFailingOnce(tmp_path / "p.db", victim="nobody")
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    threads = [threading.Thread(target=lambda k=k: [pager.alert(f"svc-{i}", "x")
                                                    for i in range(k, 200, 8)])
               for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    pager.flush(timeout=30)
    assert store.calls < 200, f"{store.calls} commits for 200 transitions"
    pager.stop()
    store.close()


def test_overdue_timeout_fires_after_restart_with_the_real_timer(policies, tmp_path):
    """A deadline that passed while down escalates at once under the threaded timer."""
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    past = datetime.now(UTC) - timedelta(hours=1)
    first = Pager.start(policies=policies, mail=RecordingMailSender(), sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store, clock=lambda: past)
    first.alert("checkout", "down").get(timeout=5)
    first.stop()
    store.close()

    level_two = threading.Event()

    class Sms(RecordingSmsSender):
        def send_sms(self, to, text):
            super().send_sms(to, text)
            if "level 2" in text:
                level_two.set()

    store = SqliteStore(path)
    with ThreadedTimer() as timer:
        second = Pager.start(policies=policies, mail=RecordingMailSender(), sms=Sms(),
                             timer=timer, store=store)
        assert level_two.wait(timeout=10), "the overdue timeout was lost at restart"
        second.stop()
    store.close()


def test_clean_stop_leaves_no_page_pending(policies, tmp_path):
    """stop() right after 20 alerts: every page delivered and marked; a restart resends none."""
    for i in range(20):
        policies.put(two_level_policy(f"svc-{i}"))
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    mail = RecordingMailSender()
    pager = Pager.start(policies=policies, mail=mail, sms=RecordingSmsSender(),
                        timer=ManualTimer(), store=store)
    futures = [pager.alert(f"svc-{i}", "down") for i in range(20)]
    pager.stop()
    assert all(f.get(timeout=1).event == "incident_opened" for f in futures)
    assert len(mail.sent) == 20
    assert {row["status"] for row in store.outbox()} == {"delivered"}
    store.close()
    store = SqliteStore(path)
    again = RecordingMailSender()
    second = Pager.start(policies=policies, mail=again, sms=RecordingSmsSender(),
                         timer=ManualTimer(), store=store)
    second.flush()
    assert again.sent == []
    second.stop()
    store.close()
