"""Commit before effects, recovery and the policy snapshot, on a real SQLite file; group
commit on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from adapters.memory import InMemoryStore, ManualTimer, RecordingMailSender, RecordingSmsSender
from adapters.postgres import PostgresStore
from adapters.sqlite import SqliteStore
from pager_actors import EscalationPolicy, Health, Level, Pager, ServiceStatus, SmsTarget
from tests.conftest import BACKUP_SMS, ONCALL_SMS, two_level_policy

T = timedelta(minutes=15)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class OutboxCheckingSms(RecordingSmsSender):
    """Before each send, looks the page up in the store's file through its own connection."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path
        self.rows_seen: list[str | None] = []

    def send_sms(self, to, text):
        db = sqlite3.connect(self.path)
        row = db.execute("SELECT status FROM outbox WHERE target = ? ORDER BY created_at DESC",
                         (f"sms:{to}",)).fetchone()
        db.close()
        self.rows_seen.append(row[0] if row else None)
        super().send_sms(to, text)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "pager.db"


def start(policies, store, clock=None, **kwargs):
    mail, sms, timer = RecordingMailSender(), RecordingSmsSender(), ManualTimer()
    pager = Pager.start(policies=policies, mail=mail, sms=sms, timer=timer, store=store,
                        clock=clock or Clock(), **kwargs)
    return pager, mail, sms, timer


def test_page_is_committed_before_the_gateway_is_called(policies, db_path):
    """When the SMS port runs, its outbox row is already committed (and still pending)."""
    store = SqliteStore(db_path)
    sms = OutboxCheckingSms(db_path)
    pager = Pager.start(policies=policies, mail=RecordingMailSender(), sms=sms,
                        timer=ManualTimer(), store=store)
    pager.alert("checkout", "down").get(timeout=5)
    pager.flush()
    assert sms.rows_seen == ["pending"]
    [sms_row] = [r for r in store.outbox() if r["target"].startswith("sms:")]
    assert sms_row["status"] == "delivered"
    pager.stop()
    store.close()


def test_future_resolves_only_once_the_state_is_committed(policies, db_path):
    """After alert().get() another connection already sees the new state."""
    store = SqliteStore(db_path)
    pager, *_ = start(policies, store)
    outcome = pager.alert("checkout", "down").get(timeout=5)
    db = sqlite3.connect(db_path)
    [(version,)] = db.execute("SELECT version FROM services WHERE service_id = 'checkout'")
    db.close()
    assert version == outcome.state.version == 1
    pager.stop()
    store.close()


def test_restart_recovers_statuses_timers_and_undelivered_pages(policies, db_path):
    """A new pager on the same file: same statuses, remaining delays, same tokens, resends."""
    clock = Clock()
    store = SqliteStore(db_path)
    first, _, _, timer1 = start(policies, store, clock)
    first.alert("checkout", "down").get(timeout=5)
    first.alert("search", "slow").get(timeout=5)
    first.acknowledge("search").get(timeout=5)
    first.flush()
    token = timer1.armed[0].token
    first.stop()
    store.close()
    # A page committed but never delivered, as if the process died before the gateway call.
    db = sqlite3.connect(db_path)
    db.execute("UPDATE outbox SET status = 'pending' "
               "WHERE target = 'sms:+33600000001' AND service_id = 'checkout'")
    db.commit()
    db.close()

    clock.now += timedelta(minutes=10)
    store = SqliteStore(db_path)
    second, mail2, sms2, timer2 = start(policies, store, clock)
    second.flush()
    assert second.status("checkout") == ServiceStatus(Health.UNHEALTHY, 1, False, "down")
    assert second.status("search") == ServiceStatus(Health.UNHEALTHY, 1, True, "slow")
    [rearmed] = timer2.armed
    assert (rearmed.service_id, rearmed.token, rearmed.delay) == ("checkout", token,
                                                                  timedelta(minutes=5))
    assert [s.to for s in sms2.sent] == [ONCALL_SMS.number]
    assert mail2.sent == []
    assert second.stats()["service_actors"] == 0, "recovery started no actor"
    [outcome] = [f.get(timeout=5) for f in timer2.advance(timedelta(minutes=5))]
    assert outcome.event == "escalated"
    second.flush()
    assert sms2.sent[-1].to == BACKUP_SMS.number
    second.stop()
    store.close()


def test_overdue_timeout_is_rearmed_with_zero_delay(policies, db_path):
    """A deadline that passed while the pager was down fires at once after restart."""
    clock = Clock()
    store = SqliteStore(db_path)
    first, *_ = start(policies, store, clock)
    first.alert("checkout", "down").get(timeout=5)
    first.stop()
    store.close()
    clock.now += timedelta(hours=2)
    store = SqliteStore(db_path)
    second, _, _, timer = start(policies, store, clock)
    second.flush()
    assert [t.delay for t in timer.armed] == [timedelta(0)]
    second.stop()
    store.close()


def test_escalation_after_restart_follows_the_policy_snapshot(policies, db_path):
    """Levels in force when the incident opened still apply after a restart and a policy edit."""
    store = SqliteStore(db_path)
    first, *_ = start(policies, store)
    first.alert("checkout", "down").get(timeout=5)
    first.stop()
    store.close()
    policies.put(EscalationPolicy("checkout", [Level([SmsTarget("+33699999999")])]))
    store = SqliteStore(db_path)
    second, _, sms, _ = start(policies, store)
    assert second.ack_timeout("checkout").get(timeout=5).event == "escalated"
    second.flush()
    assert [s.to for s in sms.sent] == [BACKUP_SMS.number]
    second.stop()
    store.close()


def test_in_memory_store_recovers_within_one_process(policies):
    """The default store survives a Pager restart in the same process, like SQLite does."""
    store = InMemoryStore()
    first, *_ = start(policies, store)
    first.alert("checkout", "down").get(timeout=5)
    first.stop()
    second, _, _, timer = start(policies, store)
    second.flush()
    assert second.status("checkout").health is Health.UNHEALTHY
    assert [t.service_id for t in timer.armed] == ["checkout"]
    second.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def durable_store(request, db_path):
    """A new SQLite file or PostgreSQL database (the test closes it)."""
    if request.param == "postgres":
        return PostgresStore(request.getfixturevalue("pg_dsn"))
    return SqliteStore(db_path)


def test_group_commit_writes_many_services_per_transaction(policies, durable_store):
    """Concurrent alerts over 200 services all commit and page, each page delivered once,
    on each durable store."""
    for i in range(200):
        policies.put(two_level_policy(f"svc-{i}"))
    store = durable_store
    pager, mail, sms, _ = start(policies, store)
    futures = [pager.alert(f"svc-{i}", "down") for i in range(200)]
    assert all(f.get(timeout=10).event == "incident_opened" for f in futures)
    pager.flush(timeout=10)
    assert len(mail.sent) == len(sms.sent) == 200
    assert {r["status"] for r in store.outbox()} == {"delivered"}
    pager.stop()
    store.close()
