"""PostgresStore specifics, on a real PostgreSQL (the contract itself runs in the shared store
suite): the versioned schema and concurrent first starts, shards on every row, connections
lost and found again, what PostgreSQL cannot hold, and passwords kept out of messages."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import tests.pg
from adapters.postgres import _SCHEMA_V1, MIGRATION_LOCK, SCHEMA_VERSION, PostgresStore
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import MonitoredService, RaiseAlert, Record, TimelineEntry, decide
from pager_actors.ports import (
    DeliveryResult,
    StoreCorruptError,
    StoreError,
    Transition,
    TransitionRefusedError,
)
from tests.conftest import two_level_policy
from tests.e2e.daemon import ROOT, wait_for
from tests.pg import PASSWORD, CommitCutter

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def opened(service_id: str, message: str = "down", before: int = 0) -> Transition:
    """A transition opening an incident; past 2**63 incidents its number is no BIGINT."""
    decision = decide(MonitoredService(service_id, None, before), RaiseAlert(message),
                      two_level_policy(service_id), now=NOW, ack_timeout=timedelta(minutes=15))
    return Transition(0, decision.service, decision.effects)


@pytest.fixture
def store(pg_dsn):
    store = PostgresStore(pg_dsn)
    yield store
    store.close()


def rows(dsn: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """What another connection sees."""
    with psycopg.connect(dsn, autocommit=True) as db:
        return db.execute(sql, params).fetchall()


def test_a_new_database_gets_the_versioned_schema(store, pg_dsn):
    """Opening an empty database creates the tables, records the schema version, the shard
    count and the migration, once."""
    assert store.schema_version() == SCHEMA_VERSION
    tables = {name for (name,) in rows(pg_dsn, "SELECT tablename FROM pg_tables "
                                               "WHERE schemaname = current_schema()")}
    assert tables == {"meta", "services", "outbox", "timeline", "overrides", "leases", "nodes",
                      "commands", "console_sessions", "login_failures", "console_keys",
                      "contact_sends"}
    meta = dict(rows(pg_dsn, "SELECT key, value FROM meta WHERE key <> 'probe'"))
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["shards"] == str(SHARDS)
    assert [key for key in meta if key.startswith("migrated_to_")] == [
        f"migrated_to_{n}" for n in range(1, SCHEMA_VERSION + 1)]


def test_a_version_1_database_is_migrated_with_its_rows_kept(pg_dsn):
    """A store from before the cluster (schema v1) gains the lease, node, command, console
    and throttle ledger tables, one unheld lease per shard at epoch 0, and keeps its
    services."""
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        for statement in _SCHEMA_V1:
            db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('shards', %s), "
                   "('migrated_to_1', 'then')", (str(SHARDS),))
        db.execute("INSERT INTO services VALUES ('checkout', %s, 3, %s, NULL, NULL, FALSE, "
                   "now())", (shard_of("checkout"), '{"opened":0,"incident":null,"alerts":[]}'))
    store = PostgresStore(pg_dsn)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 4
        assert store.load("checkout") == MonitoredService("checkout", None, 0, 3)
    finally:
        store.close()
    assert rows(pg_dsn, "SELECT count(*), min(shard), max(shard), max(epoch), count(node) "
                        "FROM leases") == [(SHARDS, 0, SHARDS - 1, 0, 0)]
    assert rows(pg_dsn, "SELECT count(*) FROM console_sessions") == [(0,)]


def test_every_service_and_outbox_row_carries_its_shard_indexed(store, pg_dsn):
    """`shard` is a NOT NULL SMALLINT, shard_of(service_id), on services and outbox rows,
    and both tables have an index starting with it."""
    store.commit([opened("checkout"), opened("search")])
    for table in ("services", "outbox"):
        found = rows(pg_dsn, f"SELECT DISTINCT service_id, shard FROM {table}")
        assert sorted(found) == [("checkout", shard_of("checkout")),
                                 ("search", shard_of("search"))]
        [(kind, nullable)] = rows(pg_dsn, "SELECT data_type, is_nullable FROM "
                                          "information_schema.columns WHERE table_name = %s "
                                          "AND column_name = 'shard'", table)
        assert (kind, nullable) == ("smallint", "NO")
        indexes = [d for (d,) in rows(pg_dsn, "SELECT indexdef FROM pg_indexes "
                                              "WHERE tablename = %s", table)]
        assert any(f"ON public.{table} USING btree (shard" in d for d in indexes), indexes


OPEN_ONCE = ("import sys; from adapters.postgres import PostgresStore; "
             "PostgresStore(sys.argv[1]).close()")


def test_concurrent_first_starts_migrate_exactly_once(pg_dsn):
    """Six threads and three processes open one empty database together (all held at the
    migration lock first): every one opens, and each migration ran once."""
    holder = psycopg.connect(pg_dsn, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    errors: list[BaseException] = []

    def open_and_close() -> None:
        try:
            PostgresStore(pg_dsn).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    processes = []
    try:
        for thread in threads:
            thread.start()
        processes = [subprocess.Popen([sys.executable, "-c", OPEN_ONCE, pg_dsn], cwd=ROOT,
                                      stderr=subprocess.PIPE, text=True) for _ in range(3)]

        def waiting() -> int:
            [(count,)] = rows(pg_dsn, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                      "'advisory' AND NOT granted")
            return int(count)  # type: ignore[call-overload]

        wait_for(lambda: waiting() == 9, 30, "nine openers waiting on the migration lock")
    finally:
        holder.close()  # lets them all go at once
        for thread in threads:
            thread.join(timeout=30)
        outcomes = [(p.wait(timeout=30), p.stderr.read() if p.stderr else "")
                    for p in processes]
    assert not errors and all(code == 0 for code, _ in outcomes), (errors, outcomes)
    migrated = rows(pg_dsn, "SELECT key FROM meta WHERE key LIKE 'migrated_to_%%'")
    assert sorted(key for (key,) in migrated) == [f"migrated_to_{n}"
                                                  for n in range(1, SCHEMA_VERSION + 1)]


def test_a_newer_schema_is_refused_untouched(store, pg_dsn):
    """A database a newer pager migrated is refused with both versions named."""
    store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match=f"schema version 99 is newer than this program's "
                                         f"{SCHEMA_VERSION}"):
        PostgresStore(pg_dsn)
    assert rows(pg_dsn, "SELECT value FROM meta WHERE key = 'schema_version'") == [("99",)]


def test_a_database_with_our_tables_but_no_version_is_refused(pg_dsn):
    """Tables named like ours without a `meta` version: not a pager store; left alone."""
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("CREATE TABLE services (name TEXT)")
    with pytest.raises(StoreCorruptError, match="no pager schema version"):
        PostgresStore(pg_dsn)
    assert rows(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'meta'") == [(0,)]


def test_another_shard_count_is_refused(store, pg_dsn):
    """Rows sharded into another count would be owned by the wrong shards: refused."""
    store.close()
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute("UPDATE meta SET value = '16' WHERE key = 'shards'")
    with pytest.raises(StoreError, match=f"16 shards.*{SHARDS}"):
        PostgresStore(pg_dsn)


def test_a_value_postgresql_cannot_hold_fails_only_its_transition(store):
    """An incident number past 64 bits is refused as that service's, the call rolled back
    whole; the other transition commits on its own afterwards."""
    with pytest.raises(TransitionRefusedError) as refused:
        store.commit([opened("good"), opened("bad", before=2**63)])
    assert refused.value.service_id == "bad"
    assert "out of range" in str(refused.value)
    assert store.load("good") is None and store.undelivered() == []
    store.commit([opened("good")])
    assert store.load("good") is not None


def test_a_lone_surrogate_fails_only_its_transition(store):
    """Text UTF-8 cannot encode (here a timeline message) is that transition's fault, as in
    SQLite; the state's JSON escapes it, so only the plain text columns can refuse it."""
    bad = opened("bad")
    entry = TimelineEntry(NOW, "opened", 1, 1, 1, message="\ud800")
    with pytest.raises(TransitionRefusedError, match="'bad'"):
        store.commit([opened("good"), bad._replace(effects=(Record("bad", entry),))])
    assert store.load("good") is None
    store.commit([opened("good")])


def test_nul_in_timeline_and_gateway_texts_is_stored_as_a_replacement_character(store):
    """PostgreSQL text cannot hold NUL: the timeline's message and a gateway's error keep
    their text with U+FFFD where NUL was; the state itself keeps the NUL."""
    transition = opened("checkout", "disk\x00full")
    store.commit([transition])
    assert store.load("checkout") == transition.state
    assert store.timeline("checkout", 1)[0].message == "disk\ufffdfull"
    mail = next(n for n in store.undelivered() if n.channel == "mail")
    store.commit([], [DeliveryResult(mail.key, "550 \x00 no \ud800")])
    failed = store.timeline("checkout", 1)[-1]
    assert (failed.event, failed.error) == ("delivery_failed", "550 \ufffd no ?")


def test_a_store_that_refuses_writes_says_so_in_postgresql_words(store, pg_dsn, postgres):
    """A read-only database refuses every write: a StoreError for the whole call (not one
    transition's), with PostgreSQL's reason; writes work again once it is writable."""
    name = pg_dsn.rsplit("/", 1)[1]
    with postgres.admin() as db:
        db.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = %s", (name,))
    # The writer's connection was cut: the call finds out and runs again on a new one.
    with pytest.raises(StoreError, match="read-only transaction") as refused:
        store.commit([opened("checkout")])
    assert not isinstance(refused.value, TransitionRefusedError)
    with pytest.raises(StoreError, match="read-only transaction"):
        store.probe()
    with postgres.admin() as db:
        db.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE datname = %s", (name,))
    store.probe()
    store.commit([opened("checkout")])


def test_after_a_postgresql_restart_the_next_commit_reconnects(store, postgres, caplog):
    """pg_ctl restart between two commits: the next commit finds its kept connection dead
    before anything was sent, connects again and commits, once; reads find a live
    connection on their own."""
    store.commit([opened("before")])
    postgres.restart()
    store.commit([opened("after")])
    assert store.load("before") is not None and store.load("after") is not None
    assert {n.service_id for n in store.undelivered()} == {"before", "after"}
    assert "store_connection_lost" in caplog.text and PASSWORD not in caplog.text


def test_while_postgresql_is_down_every_call_fails_then_all_recover(pg_dsn, postgres):
    """With the server stopped, commits, reads and probes raise StoreError (within the
    store's timeout, naming where); once it is back, each works again by itself."""
    store = PostgresStore(pg_dsn, timeout=1)
    try:
        store.commit([opened("before")])
        with postgres.stopped():
            for call in (lambda: store.commit([opened("down")]), store.probe,
                         lambda: store.load("before"), store.undelivered):
                with pytest.raises(StoreError, match=r"127\.0\.0\.1") as failed:
                    call()
                assert PASSWORD not in str(failed.value)
        store.probe()
        store.commit([opened("after")])
        assert store.load("before") is not None and store.load("down") is None
    finally:
        store.close()


def test_a_wrong_password_or_no_server_is_a_store_error_without_the_password(postgres):
    """Opening fails with StoreError naming the server and the reason, never the password."""
    name = postgres.create_database()
    try:
        with pytest.raises(StoreError, match="password authentication failed") as refused:
            PostgresStore(postgres.dsn(name, password="not-the-password"))
        assert "not-the-password" not in str(refused.value)
    finally:
        postgres.drop_database(name)
    with pytest.raises(StoreError, match="cannot connect") as refused:
        PostgresStore(f"postgresql://pager:{PASSWORD}@127.0.0.1:1/nowhere")
    assert PASSWORD not in str(refused.value)


def test_close_closes_every_connection(pg_dsn):
    """After close() the database has no connection left from the store."""
    store = PostgresStore(pg_dsn, application_name="pager-close-test")
    store.commit([opened("checkout")])
    store.load("checkout")
    store.close()
    store.close()  # twice is harmless

    def ours() -> int:
        [(count,)] = rows(pg_dsn, "SELECT count(*) FROM pg_stat_activity "
                                  "WHERE application_name = 'pager-close-test'")
        return int(count)  # type: ignore[call-overload]

    wait_for(lambda: ours() == 0, 10, "the store's connections to close")


@pytest.fixture
def cutter(postgres):
    relay = CommitCutter(postgres)
    yield relay
    relay.close()


def test_a_commit_whose_answer_was_lost_is_confirmed_committed(pg_dsn, cutter):
    """The connection drops after PostgreSQL received the COMMIT, before its answer came
    back: the store asks on a new connection, learns it committed, and returns normally."""
    store = PostgresStore(cutter.dsn(pg_dsn.rsplit("/", 1)[1]))
    try:
        cutter.cut = "after"
        store.commit([opened("checkout")])
        assert cutter.cuts == 1
        assert store.load("checkout") is not None
        assert len(store.undelivered()) == 2
        store.commit([opened("search")])  # and it goes on, on its new connection
    finally:
        store.close()


def test_a_commit_cut_before_postgresql_got_it_is_reported_not_applied(pg_dsn, cutter):
    """The connection drops as the COMMIT is sent, which never arrives: PostgreSQL rolls
    back, and the store says the commit did not happen (StoreError), then goes on."""
    store = PostgresStore(cutter.dsn(pg_dsn.rsplit("/", 1)[1]))
    try:
        cutter.cut = "before"
        with pytest.raises(StoreError, match="it did not commit"):
            store.commit([opened("checkout")])
        assert cutter.cuts == 1
        assert store.load("checkout") is None and store.undelivered() == []
        store.commit([opened("checkout")])
        assert store.load("checkout") is not None
    finally:
        store.close()


def test_where_postgresql_cannot_run_the_fixture_says_why(monkeypatch):
    """No binaries, or root without a `postgres` user: Unavailable (the tests skip) with the
    reason, instead of failing."""
    monkeypatch.setattr(tests.pg.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(tests.pg.shutil, "which", lambda name: None)
    with pytest.raises(tests.pg.Unavailable, match="apt-get install postgresql"):
        tests.pg.find_bindir()
    monkeypatch.setattr(tests.pg.os, "geteuid", lambda: 0)

    def no_such_user(name):
        raise KeyError(name)

    monkeypatch.setattr(tests.pg.pwd, "getpwnam", no_such_user)
    with pytest.raises(tests.pg.Unavailable, match="no 'postgres' user"):
        tests.pg._unprivileged()
