"""PgConsoleState against a real PostgreSQL: sessions, failed logins and the login form's key
that a cluster's nodes share."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from adapters.pg_console import PRUNE_BATCH, PgConsoleState
from adapters.postgres import PostgresStore
from pager_actors.console.ports import LoginLimits, Refusal, Session
from pager_actors.domain.people import User
from pager_actors.ports import StoreError
from tests.pg import PASSWORD

ALICE = User("alice", "Alice Martin", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA")


def sql(dsn: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(query, params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def console_db(pg_dsn):
    PostgresStore(pg_dsn).close()  # its migration creates the console's tables
    return pg_dsn


@pytest.fixture
def state(console_db):
    state = PgConsoleState(console_db)
    yield state
    state.close()


def test_every_node_reads_the_same_login_key_even_when_they_start_together(console_db):
    """Eight states asking at once on a new database: one key is drawn, all read it."""
    states = [PgConsoleState(console_db) for _ in range(8)]
    start = threading.Barrier(len(states))

    def key(state: PgConsoleState) -> bytes:
        start.wait(10)
        return state.login_key()

    try:
        with ThreadPoolExecutor(len(states)) as pool:
            keys = set(pool.map(key, states))
    finally:
        for state in states:
            state.close()
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert sql(console_db, "SELECT count(*) FROM console_keys") == [(1,)]


def test_a_session_is_read_back_and_ended_by_another_connection(console_db):
    """Created through one state, found and ended through another."""
    one, other = PgConsoleState(console_db), PgConsoleState(console_db)
    try:
        session = one.sessions().create(ALICE)
        assert other.sessions().get(session.id) == session
        other.sessions().end(session.id)
        assert one.sessions().get(session.id) is None
        other.sessions().end(session.id)  # ending it again does nothing
    finally:
        one.close()
        other.close()


def test_unknown_empty_or_oversized_session_ids_are_no_session(state):
    """No cookie, a made-up id, or one longer than any we issue: None."""
    sessions = state.sessions()
    assert sessions.get(None) is None and sessions.get("") is None
    assert sessions.get("made-up") is None and sessions.get("x" * 10_000) is None


def test_a_flash_is_taken_once_even_by_pages_asking_at_once(state):
    """Sixteen takes racing on one session: exactly one gets the message."""
    sessions = state.sessions()
    session = sessions.create(ALICE)
    sessions.set_flash(session, ("success", "Incident #1 resolved."))
    start = threading.Barrier(16)

    def take(_: int) -> tuple[str, str] | None:
        start.wait(10)
        return sessions.take_flash(session)

    with ThreadPoolExecutor(16) as pool:
        taken = [flash for flash in pool.map(take, range(16)) if flash is not None]
    assert taken == [("success", "Incident #1 resolved.")]


def test_a_new_flash_replaces_one_not_shown_and_a_nul_is_stored(state):
    """The last message wins; text PostgreSQL cannot hold is kept as U+FFFD."""
    sessions = state.sessions()
    session = sessions.create(ALICE)
    sessions.set_flash(session, ("info", "first"))
    sessions.set_flash(session, ("error", "bad\x00byte"))
    assert sessions.take_flash(session) == ("error", "bad\ufffdbyte")
    assert sessions.take_flash(session) is None


def test_expired_sessions_are_pruned_at_each_login_a_batch_at_a_time(state, console_db):
    """250 expired rows: a login removes PRUNE_BATCH of them, never a live one."""
    sessions = state.sessions()
    live = sessions.create(ALICE)
    sql(console_db, "INSERT INTO console_sessions (id_digest, user_id, csrf, credential, "
                    "created_at, expires_at) SELECT 'old' || n, 'alice', 'c', 'k', "
                    "now() - interval '13 hours', now() - interval '1 hour' "
                    "FROM generate_series(1, 250) AS n")
    sessions.create(ALICE)
    assert sql(console_db, "SELECT count(*) FROM console_sessions "
                           "WHERE expires_at <= now()") == [(250 - PRUNE_BATCH,)]
    assert sessions.get(live.id) == live


def test_a_session_lives_its_lifetime_in_the_databases_time(state, console_db):
    """lifetime=60: expires_at is created_at plus a minute, by the database's clock."""
    sessions = state.sessions(lifetime=60)
    assert sessions.lifetime == 60
    sessions.create(ALICE)
    assert sql(console_db, "SELECT EXTRACT(EPOCH FROM expires_at - created_at)::int "
                           "FROM console_sessions") == [(60,)]


def test_limits_count_per_account_per_client_and_overall(state):
    """Each scope refuses once its own count is full, account first."""
    limiter = state.limiter(LoginLimits(per_account=2, per_client=3, overall=5))
    limiter.failed("alice", "10.0.0.1")
    assert limiter.refused("alice", "10.0.0.1") is None
    limiter.failed("Alice ", "10.0.0.2")
    assert limiter.refused("ALICE", "10.0.0.9").scope == "account"
    limiter.failed("bob", "10.0.0.1")
    limiter.failed("carol", "10.0.0.1")
    assert limiter.refused("dave", "10.0.0.1").scope == "client"
    limiter.failed("erin", "10.0.0.3")
    assert limiter.refused("frank", "10.0.0.4").scope == "overall"


def test_retry_after_is_when_the_oldest_counted_failure_leaves_the_window(state, console_db):
    """Failures 800 s old in a 900 s window: wait about 100 s more, not 900."""
    limiter = state.limiter(LoginLimits(per_account=2, window=900))
    limiter.failed("alice", "c1")
    limiter.failed("alice", "c2")
    sql(console_db, "UPDATE login_failures SET at = now() - interval '800 seconds'")
    refusal = limiter.refused("alice", "c3")
    assert refusal is not None and refusal.scope == "account"
    assert 90 <= refusal.retry_after <= 100


def test_failures_past_the_window_count_no_more_and_are_pruned(state, console_db):
    """Failures older than the window neither refuse nor stay: the next failure prunes
    a bounded batch of them."""
    limiter = state.limiter(LoginLimits(per_account=1, window=900))
    limiter.failed("alice", "c1")
    sql(console_db, "UPDATE login_failures SET at = now() - interval '901 seconds'")
    sql(console_db, "INSERT INTO login_failures (scope, key, at) SELECT 'client', 'c' || n, "
                    "now() - interval '1 hour' FROM generate_series(1, 200) AS n")
    assert limiter.refused("alice", "c1") is None
    limiter.failed("bob", "c2")
    assert sql(console_db, "SELECT count(*) FROM login_failures WHERE at < now() - "
                           "interval '900 seconds'") == [(203 - PRUNE_BATCH,)]
    assert sql(console_db, "SELECT count(*) FROM login_failures WHERE at >= now() - "
                           "interval '900 seconds'") == [(3,)], "bob's, counted three ways"


def test_a_success_clears_only_its_accounts_failures(state):
    """After a success the account counts from zero; its client's failures stay."""
    limiter = state.limiter(LoginLimits(per_account=2, per_client=3, overall=100))
    limiter.failed("alice", "10.0.0.1")
    limiter.failed("alice", "10.0.0.1")
    limiter.succeeded(" ALICE")
    assert limiter.refused("alice", "10.0.0.2") is None
    limiter.failed("bob", "10.0.0.1")
    assert limiter.refused("carol", "10.0.0.1") == Refusal("client", 900)


def test_a_database_without_the_console_tables_is_refused_by_name(pg_dsn):
    """Opening before the store's migration made the tables: StoreError naming them."""
    with pytest.raises(StoreError, match="console_sessions, login_failures, console_keys"):
        PgConsoleState(pg_dsn)


def test_a_wrong_password_or_a_garbled_url_never_shows_the_password(postgres, console_db):
    """A refused login names the server and PostgreSQL's reason; a URL that cannot be read
    is not repeated at all."""
    wrong = console_db.replace(PASSWORD, "not-the-password-42")
    with pytest.raises(StoreError, match="password authentication failed") as refused:
        PgConsoleState(wrong, timeout=2)
    assert "not-the-password-42" not in str(refused.value)
    assert "127.0.0.1" in str(refused.value)
    with pytest.raises(StoreError) as garbled:
        PgConsoleState("host=x password=sekrit-99 =oops")
    assert "sekrit-99" not in str(garbled.value)


def test_a_session_value_carries_no_expiry_or_message(state):
    """What the store hands out is the frozen Session: nothing a page can mutate."""
    session = state.sessions().create(ALICE)
    assert isinstance(session, Session) and session.user_id == "alice"
    with pytest.raises(AttributeError):
        session.user_id = "bob"  # type: ignore[misc]
