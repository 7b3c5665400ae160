"""PgSendLedger against a real PostgreSQL: claims serialized per contact over many threads,
refusals with the wait the window asks for, pruning, a missing table, masked passwords, and
a database that is down (claims fail at once; a pager then fails open)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import psycopg
import pytest

from adapters.memory import (
    InMemoryPolicyRepository,
    InMemoryStore,
    ManualTimer,
    RecordingMailSender,
    RecordingSmsSender,
)
from adapters.pg_throttle import PRUNE_BATCH, PgSendLedger
from adapters.postgres import PostgresStore
from pager_actors import EscalationPolicy, Level, Pager, SmsTarget, Throttle, Throttling
from pager_actors.ports import StoreError
from tests.pg import PASSWORD
from tests.stress.conftest import run_threads

HOUR = 3600.0  # longer than any test: a send claimed during one never leaves its window
PHONE = "sms:+33600000001"


@pytest.fixture
def ledger_db(pg_dsn):
    """A database with the store's schema (v4 creates the ledger's table)."""
    PostgresStore(pg_dsn).close()
    return pg_dsn


@pytest.fixture
def ledger(ledger_db):
    ledger = PgSendLedger(ledger_db, timeout=2)
    yield ledger
    ledger.close()


def sql(dsn: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def test_claims_from_many_threads_never_exceed_the_limit_per_contact(ledger, ledger_db):
    """16 threads claim for 3 contacts at once: exactly `limit` claims succeed per contact
    (and per channel), each recorded once; every other claim is refused with a wait."""
    contacts = [f"sms:+3361000000{i}" for i in range(3)]
    results: Counter[tuple[str, str, bool]] = Counter()
    waits: list[float] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        for n in range(20):
            channel, contact = ("sms", "mail")[n % 2], contacts[(index + n) % 3]
            wait = ledger.claim(channel, contact, 3, HOUR)
            with lock:
                results[(channel, contact, wait is None)] += 1
                if wait is not None:
                    waits.append(wait)

    run_threads(16, claimer)
    for channel in ("sms", "mail"):
        for contact in contacts:
            assert results[(channel, contact, True)] == 3, results
    assert sum(results.values()) == 16 * 20
    assert waits and all(0 < wait <= HOUR for wait in waits)
    rows = sql(ledger_db, "SELECT channel, contact, count(*) FROM contact_sends "
                          "GROUP BY channel, contact")
    assert sorted(rows) == sorted((ch, c, 3) for ch in ("sms", "mail") for c in contacts)


def test_as_the_window_slides_no_window_ever_holds_more_than_the_limit(ledger, ledger_db):
    """8 threads claim for 2 contacts as fast as refusals allow, with a 0.2 s window, until
    each contact had 12 sends: by the database's own timestamps (copied aside before
    pruning), no 0.2 s ever held more than 2 sends to one contact."""
    window, limit, wanted = 0.2, 2, 12
    sql(ledger_db, "CREATE TABLE audit (contact TEXT, at TIMESTAMPTZ)")
    sql(ledger_db, "CREATE FUNCTION audit_send() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN INSERT INTO audit VALUES (NEW.contact, NEW.at); RETURN NEW; END $$")
    sql(ledger_db, "CREATE TRIGGER audit AFTER INSERT ON contact_sends "
                   "FOR EACH ROW EXECUTE FUNCTION audit_send()")
    contacts = ["sms:+33610000001", "sms:+33610000002"]
    allowed: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + 30

    def claimer(index: int) -> None:
        contact = contacts[index % 2]
        while time.monotonic() < deadline:
            with lock:
                if allowed[contact] >= wanted:
                    return
            wait = ledger.claim("sms", contact, limit, window)
            if wait is None:
                with lock:
                    allowed[contact] += 1
            else:
                assert 0 < wait <= window
                time.sleep(min(wait, 0.02))  # pacing the load, not waiting for an outcome

    run_threads(8, claimer)
    assert all(allowed[contact] >= wanted for contact in contacts), allowed
    for contact in contacts:
        times = [row[0] for row in sql(ledger_db, "SELECT at FROM audit WHERE contact = %s "
                                                  "ORDER BY at", (contact,))]
        assert len(times) == allowed[contact]
        assert all((later - earlier).total_seconds() >= window
                   for earlier, later in zip(times, times[limit:], strict=False)), times


def test_a_refusal_waits_until_the_limit_th_newest_send_leaves_the_window(ledger, ledger_db):
    """With sends 10, 20 and 30 s ago and 2 allowed per hour, the next may go when the one
    20 s ago leaves the window; sends past the window do not count."""
    sql(ledger_db, "INSERT INTO contact_sends (channel, contact, at) VALUES "
                   "('sms', %s, now() - interval '10 s'), ('sms', %s, now() - interval '20 s'), "
                   "('sms', %s, now() - interval '30 s'), ('sms', %s, now() - interval '2 h')",
        (PHONE, PHONE, PHONE, "sms:+33699999999"))
    wait = ledger.claim("sms", PHONE, 2, HOUR)
    assert wait is not None and HOUR - 20 - 60 < wait <= HOUR - 20
    assert ledger.claim("sms", "sms:+33699999999", 1, HOUR) is None
    assert ledger.claim("mail", PHONE, 1, HOUR) is None  # channels count apart
    assert sql(ledger_db, "SELECT count(*) FROM contact_sends WHERE contact = %s",
               (PHONE,)) == [(4,)]


def test_each_claim_prunes_a_bounded_batch_of_sends_past_the_window(ledger, ledger_db):
    """Old rows of the channel go, at most PRUNE_BATCH per claim that records a send."""
    sql(ledger_db, "INSERT INTO contact_sends (channel, contact, at) "
                   "SELECT 'sms', 'sms:+3360000' || n, now() - interval '2 h' "
                   "FROM generate_series(1, %s) AS n", (PRUNE_BATCH + 50,))
    assert ledger.claim("sms", PHONE, 1, HOUR) is None
    assert sql(ledger_db, "SELECT count(*) FROM contact_sends") == [(51,)]
    assert ledger.claim("sms", "sms:+33611111111", 1, HOUR) is None
    assert sql(ledger_db, "SELECT count(*) FROM contact_sends") == [(2,)]


def test_a_database_without_the_ledgers_table_is_refused(pg_dsn):
    """Opening before the store migrated the schema says what is missing."""
    with pytest.raises(StoreError, match="no contact_sends table"):
        PgSendLedger(pg_dsn, timeout=2)


def test_a_wrong_password_never_shows_the_password(ledger_db):
    """The refusal is PostgreSQL's words, with no password in them."""
    wrong = ledger_db.replace(PASSWORD, "not-the-password-42")
    with pytest.raises(StoreError, match="password authentication failed") as refused:
        PgSendLedger(wrong, timeout=2)
    assert "not-the-password-42" not in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_a_ledger_whose_database_is_down_fails_at_once_and_recovers(postgres, ledger_db):
    """Down: a claim fails (StoreError, no password), the next one at once without asking;
    back up: claims are recorded again."""
    remembering = PgSendLedger(ledger_db, timeout=1, retry_after=3600)
    forgetting = PgSendLedger(ledger_db, timeout=1, retry_after=0)
    try:
        with postgres.stopped():
            with pytest.raises(StoreError) as failed:
                remembering.claim("sms", PHONE, 1, HOUR)
            assert PASSWORD not in str(failed.value)
            began = time.monotonic()
            with pytest.raises(StoreError, match="not asked"):
                remembering.claim("sms", PHONE, 1, HOUR)
            assert time.monotonic() - began < 0.5
        deadline = time.monotonic() + 10
        while True:  # the pool reconnects in the background: bounded wait
            try:
                assert forgetting.claim("sms", PHONE, 1, HOUR) is None
                break
            except StoreError:
                assert time.monotonic() < deadline, "the ledger did not reconnect"
                time.sleep(0.1)
        assert forgetting.claim("sms", PHONE, 1, HOUR) is not None
    finally:
        remembering.close()
        forgetting.close()


def test_a_pager_pages_anyway_while_the_ledgers_database_is_down(postgres, ledger_db):
    """Fail open: the SMS goes and the failure is counted."""
    ledger = PgSendLedger(ledger_db, timeout=1)
    sms = RecordingSmsSender()
    pager = Pager.start(
        policies=InMemoryPolicyRepository(
            [EscalationPolicy("checkout", [Level([SmsTarget("+33600000001")])])]),
        mail=RecordingMailSender(), sms=sms, timer=ManualTimer(), store=InMemoryStore(),
        throttle=Throttling(sms=Throttle(1, timedelta(hours=1))), ledger=ledger)
    try:
        with postgres.stopped():
            pager.alert("checkout", "disk full").get(timeout=5)
            pager.flush(timeout=10)
            assert len(sms.sent) == 1
            assert pager.stats()["throttle_ledger_failures"] == 1
    finally:
        pager.stop()
        ledger.close()
