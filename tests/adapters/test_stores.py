"""The StateStore contract, on every store (tests/adapters/conftest.py: memory, a real SQLite
file, a real PostgreSQL database); SQLite specifics."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite import SCHEMA_VERSION, SqliteStore
from pager_actors.cluster import shard_of
from pager_actors.domain import (
    Acknowledge,
    Command,
    MonitoredService,
    Notify,
    PageFormat,
    RaiseAlert,
    ReportHealthy,
    TimerFired,
    decide,
)
from pager_actors.ports import (
    DeliveryResult,
    StoreError,
    Transition,
    VersionConflictError,
)
from tests.conftest import two_level_policy

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def step(state: MonitoredService, command: Command, **options) -> Transition:
    decision = decide(state, command, two_level_policy(state.service_id), now=NOW,
                      ack_timeout=timedelta(minutes=15), **options)
    return Transition(state.version, decision.service, decision.effects)


def test_unknown_service_loads_as_none(store):
    """A service that never changed has no stored state."""
    assert store.load("checkout") is None


def test_committed_state_loads_back_with_policy_snapshot(store):
    """What was committed loads back equal, incident and policy snapshot included."""
    opened = step(MonitoredService("checkout"), RaiseAlert("p99 > 2s"))
    escalated = step(opened.state, TimerFired(None))
    store.commit([opened])
    store.commit([escalated])
    assert store.load("checkout") == escalated.state
    assert store.load("checkout").incident.policy == two_level_policy("checkout")


def test_a_pending_page_loads_back_whole_reply_code_included(store):
    """What the outbox gives back is the page committed, so a bundle after a restart can
    still name the incident's reply code."""
    opened = step(MonitoredService("checkout"), RaiseAlert("a"),
                  fmt=PageFormat(reply_codes=True), next_code="4821")
    store.commit([opened])
    pages = [e for e in opened.effects if isinstance(e, Notify)]
    assert sorted(store.undelivered(), key=str) == sorted(pages, key=str)
    assert {p.channel: p.reply_code for p in pages} == {"mail": None, "sms": "4821"}


def test_stale_version_is_refused_and_the_batch_applies_nothing(store):
    """A conflicting transition fails the whole batch: no state and no outbox row."""
    opened = step(MonitoredService("checkout"), RaiseAlert("a"))
    store.commit([opened])
    other = step(MonitoredService("search"), RaiseAlert("b"))
    with pytest.raises(VersionConflictError, match="checkout"):
        store.commit([other, opened])
    assert store.load("search") is None
    assert {n.service_id for n in store.undelivered()} == {"checkout"}


def test_outbox_holds_each_notification_until_settled(store):
    """Each page is an outbox row until reported delivered or failed."""
    opened = step(MonitoredService("checkout"), RaiseAlert("a"))
    store.commit([opened])
    mail, sms = store.undelivered()
    assert {mail.key, sms.key} == {e.key for e in opened.effects if hasattr(e, "key")}
    store.commit([], [DeliveryResult(mail.key), DeliveryResult(sms.key, "gateway 503")])
    assert store.undelivered() == []


def test_armed_timers_are_open_unacknowledged_incidents_only(store):
    """Recovery re-arms open, unacknowledged incidents with their token and deadline."""
    a = step(MonitoredService("a"), RaiseAlert("x"))
    b = step(MonitoredService("b"), RaiseAlert("x"))
    c = step(MonitoredService("c"), RaiseAlert("x"))
    store.commit([a, b, c])
    store.commit([step(b.state, Acknowledge()), step(c.state, ReportHealthy())])
    [armed] = store.armed_timers()
    assert (armed.service_id, armed.token) == ("a", a.state.incident.armed_token)
    assert armed.deadline == NOW + timedelta(minutes=15)


def services_in_two_shards() -> tuple[list[str], list[str]]:
    """Six service ids: three in one shard, three in others."""
    ids = [f"svc{n}" for n in range(200)]
    home = shard_of(ids[0])
    same = [sid for sid in ids if shard_of(sid) == home][:3]
    return same, [sid for sid in ids if shard_of(sid) != home][:3]


def test_recovery_reads_can_be_limited_to_some_shards(store):
    """armed_timers, undelivered and reply_codes take `shards`: only those shards' services
    come back; None (the default) is every shard."""
    mine, others = services_in_two_shards()
    store.commit([step(MonitoredService(sid), RaiseAlert("down"),
                       fmt=PageFormat(reply_codes=True), next_code=f"{n:04}")
                  for n, sid in enumerate(mine + others)])
    wanted = {shard_of(mine[0])}
    assert {t.service_id for t in store.armed_timers(shards=wanted)} == set(mine)
    assert {n.service_id for n in store.undelivered(shards=wanted)} == set(mine)
    assert {sid for _, sid, _, _ in store.reply_codes(shards=wanted)} == set(mine)
    assert {t.service_id for t in store.armed_timers()} == set(mine + others)
    assert len(store.undelivered(shards=None)) == 2 * len(mine + others)
    assert store.reply_codes(shards=()) == []


def test_text_with_nul_characters_commits_and_the_state_loads_back_equal(store):
    """An alert message may hold NUL (JSON allows it, PostgreSQL text does not): the state
    keeps it exactly, and its pages are sendable."""
    opened = step(MonitoredService("checkout"), RaiseAlert("disk\x00full", key="nul"))
    store.commit([opened])
    assert store.load("checkout") == opened.state
    assert store.load("checkout").alerts[0].message == "disk\x00full"
    assert all("\x00" not in n.text for n in store.undelivered())


def test_sqlite_creates_schema_on_an_empty_file(tmp_path):
    """Opening a new file migrates it to the current schema, in WAL mode."""
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"services", "outbox"} <= tables
    db.close()


def test_state_survives_reopening(reopen):
    """A second store on the same file or database sees everything committed by the first."""
    first = reopen()
    opened = step(MonitoredService("checkout"), RaiseAlert("a"))
    first.commit([opened])
    first.close()
    second = reopen()
    assert second.load("checkout") == opened.state
    assert len(second.undelivered()) == 2


# Corrupt, foreign and newer files: tests/adapters/test_sqlite_files.py, byte for byte.


def test_unreadable_path_is_a_clear_error(tmp_path):
    """A directory where the file should be gives a StoreError, not a traceback deep inside."""
    with pytest.raises(StoreError, match=str(tmp_path)):
        SqliteStore(tmp_path)
