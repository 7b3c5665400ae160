"""The console's state on PostgreSQL: sessions, failed logins and the login form's key,
shared by every node of a cluster (issue 11), so any node serves any request.

The tables are NOT created here: they belong to PostgresStore's versioned
migrations (its schema v3), which the daemon runs when it
opens its store, before it opens this. This module only reads and writes their
rows, and refuses to open on a database that does not have them.

- `console_sessions`: one row per session, keyed by the SHA-256 of its id (the
  cookie's value is never stored, so a copy of the table logs nobody in), with
  its user, CSRF token, credential, expiry and the message its next page shows.
  A session is one row, so logging out on one node ends it on all of them, and
  a flash set on one node is shown once by whichever node serves the next page
  (taking it is one UPDATE under the row's lock).
- `login_failures`: one row per failed login and scope (`account` under
  `ports.account_key`, `client`, and `overall`), so counts add up over the
  nodes. A success deletes its account's rows.
- `console_keys`: the login form's HMAC key, drawn once by whichever node comes
  first (INSERT ... ON CONFLICT DO NOTHING, then SELECT), so every node signs and
  checks login forms alike.

Time is the database's (`now()`), never a node's: nodes whose clocks disagree
still agree on when a session expires and a failure leaves its window. Rows
past their time are pruned as they are met, at most `PRUNE_BATCH` a call, so no
call does unbounded work. Every call is one statement on a pooled autocommit
connection, and blocks: the console calls it on a worker thread. PostgreSQL
errors become StoreError, whose message never carries the password.

Limits across nodes: an attempt is checked (`refused`) and then counted
(`failed`) in two statements, so attempts running at the same moment on
several nodes may each pass the check: the count can overshoot a limit by the
attempts in flight (each node checks one password at a time).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from adapters.pg_conn import open_pool
from adapters.postgres import PostgresTarget
from pager_actors.console.ports import (
    ACCOUNT_KEY_CHARS,
    SESSION_LIFETIME,
    Flash,
    LoginLimits,
    Refusal,
    Session,
    account_key,
    new_session,
)
from pager_actors.domain.people import User
from pager_actors.ports import StoreError

# The console's tables, created by PostgresStore's schema v3 (adapters/postgres.py).
CONSOLE_TABLES = ("console_sessions", "login_failures", "console_keys")

PRUNE_BATCH = 100  # rows past their time deleted at most, per call that prunes
LOGIN_FORM_KEY = "login_form"
MAX_SESSION_ID_CHARS = 128  # a cookie longer than any id we issue is no session
STATEMENT_TIMEOUT = "5s"  # a page waits no longer on a row lock or a stuck disk
IDLE_IN_TRANSACTION_TIMEOUT = "15s"

Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


class PgConsoleState:
    """The console's state in one PostgreSQL database: `sessions()`, `limiter(limits)` and
    `login_key()` for `create_console`. Thread-safe (a small pool of connections);
    `close()` when done.

    `dsn` is the store's `postgresql://` URL or connection string. `timeout` bounds
    how long a call waits for a connection. Opening connects and checks that the
    console's tables exist, or raises StoreError.
    """

    def __init__(self, dsn: str, *, timeout: float = 5.0, connections: int = 4,
                 application_name: str = "pager-actors-console") -> None:
        self._target = PostgresTarget.parse(dsn, application_name=application_name)
        self.where = self._target.where
        self._timeout = timeout
        self._pool = open_pool(self._target, what="the console", tables=CONSOLE_TABLES,
                               connections=connections, timeout=timeout,
                               configure=_configure, name="pager-console")

    def _reason(self, error: BaseException) -> str:
        return self._target.reason(error) or type(error).__name__

    def run(self, what: str, work: Callable[[Connection], T]) -> T:
        """`work` on a pooled autocommit connection; its failure is StoreError naming `what`."""
        try:
            with self._pool.connection() as db:
                return work(db)
        except PoolTimeout as error:
            raise StoreError(f"{self.where}: cannot {what}: no connection to PostgreSQL "
                             f"within {self._timeout:g} s") from error
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: cannot {what}: {self._reason(error)}") from error

    def sessions(self, lifetime: float = SESSION_LIFETIME) -> PgSessions:
        """The sessions (`ports.Sessions`), each living `lifetime` seconds from login."""
        return PgSessions(self, lifetime)

    def limiter(self, limits: LoginLimits | None = None) -> PgLoginAttempts:
        """The login limits (`ports.LoginAttempts`), counted over every node."""
        return PgLoginAttempts(self, limits or LoginLimits())

    def login_key(self) -> bytes:
        """The key every node signs its login forms with: drawn by the first node to ask,
        read by the others."""

        def key(db: Connection) -> bytes:
            db.execute("INSERT INTO console_keys (name, key) VALUES (%s, %s) "
                       "ON CONFLICT (name) DO NOTHING",
                       (LOGIN_FORM_KEY, secrets.token_bytes(32)))
            return bytes(_one(db, "SELECT key FROM console_keys WHERE name = %s",
                              (LOGIN_FORM_KEY,)))

        return self.run("read the login form's key", key)

    def close(self) -> None:
        self._pool.close()


class PgSessions:
    """`ports.Sessions` in `console_sessions`; expiry by the database's clock."""

    def __init__(self, state: PgConsoleState, lifetime: float) -> None:
        self._state, self._lifetime = state, lifetime

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def create(self, user: User) -> Session:
        session = new_session(user)
        # Each login prunes a bounded batch of expired sessions: there are never more
        # expired rows than logins, so the table stays bounded by the live ones.
        self._state.run("start a session", lambda db: db.execute(
            "WITH pruned AS (DELETE FROM console_sessions WHERE id_digest IN ("
            "  SELECT id_digest FROM console_sessions WHERE expires_at <= now() LIMIT %s)) "
            "INSERT INTO console_sessions (id_digest, user_id, csrf, credential, created_at, "
            "expires_at) VALUES (%s, %s, %s, %s, now(), now() + make_interval(secs => %s))",
            (PRUNE_BATCH, _digest(session.id), _text(session.user_id), session.csrf,
             session.credential, self._lifetime)))
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
            return None
        digest = _digest(session_id)
        row = self._state.run("read a session", lambda db: db.execute(
            "WITH expired AS (DELETE FROM console_sessions "
            "  WHERE id_digest = %s AND expires_at <= now()) "
            "SELECT user_id, csrf, credential FROM console_sessions "
            "WHERE id_digest = %s AND expires_at > now()", (digest, digest)).fetchone())
        if row is None:
            return None
        user_id, csrf, bound_to = row
        return Session(session_id, user_id, csrf, bound_to)

    def end(self, session_id: str) -> None:
        self._state.run("end a session", lambda db: db.execute(
            "DELETE FROM console_sessions WHERE id_digest = %s", (_digest(session_id),)))

    def set_flash(self, session: Session, flash: Flash) -> None:
        kind, text = flash
        self._state.run("keep a message", lambda db: db.execute(
            "UPDATE console_sessions SET flash_kind = %s, flash_text = %s "
            "WHERE id_digest = %s AND expires_at > now()",
            (_text(kind), _text(text), _digest(session.id))))

    def take_flash(self, session: Session) -> Flash | None:
        # The row lock makes it shown once: of two pages taking it at once, the second
        # finds it gone when the first commits.
        row = self._state.run("read a message", lambda db: db.execute(
            "UPDATE console_sessions AS s SET flash_kind = NULL, flash_text = NULL "
            "FROM (SELECT id_digest, flash_kind, flash_text FROM console_sessions "
            "      WHERE id_digest = %s AND flash_kind IS NOT NULL AND expires_at > now() "
            "      FOR UPDATE) AS waiting "
            "WHERE s.id_digest = waiting.id_digest "
            "RETURNING waiting.flash_kind, waiting.flash_text",
            (_digest(session.id),)).fetchone())
        return (row[0], row[1] or "") if row else None


class PgLoginAttempts:
    """`ports.LoginAttempts` in `login_failures`, counted over every node in the database's
    clock. The rules are `console.limits`'s: refused before the password is checked,
    unknown accounts counted alike, a success clears its account's failures only."""

    def __init__(self, state: PgConsoleState, limits: LoginLimits) -> None:
        self._state, self.limits = state, limits

    def refused(self, account: str, client: str) -> Refusal | None:
        limits = self.limits
        # For each scope, the most-th newest failure in the window, if there are that many:
        # the attempt waits until it leaves the window.
        newest = ("(SELECT %s AS scope, at FROM login_failures WHERE scope = %s AND key = %s "
                  "AND at > now() - make_interval(secs => %s) ORDER BY at DESC "
                  "OFFSET %s LIMIT 1)")
        query = ("SELECT scope, EXTRACT(EPOCH FROM at + make_interval(secs => %s) - now()) "
                 f"FROM ({newest} UNION ALL {newest} UNION ALL {newest}) AS full_scopes")
        params: list[object] = [limits.window]
        for scope, key, most in (("account", account_key(account), limits.per_account),
                                 ("client", _client_key(client), limits.per_client),
                                 ("overall", "", limits.overall)):
            params += [scope, scope, key, limits.window, max(most - 1, 0)]
        rows = self._state.run("check the login limits",
                               lambda db: db.execute(query, params).fetchall())
        waits = {scope: float(wait) for scope, wait in rows}
        for scope in ("account", "client", "overall"):
            if scope in waits:
                return Refusal(scope, max(1, math.ceil(waits[scope])))
        return None

    def failed(self, account: str, client: str) -> None:
        # Each failure prunes a bounded batch of failures past the window; failures are
        # only counted after a password check, which the overall limit bounds, so the
        # table holds at most about three rows per allowed attempt.
        self._state.run("count a failed login", lambda db: db.execute(
            "WITH pruned AS (DELETE FROM login_failures WHERE id IN ("
            "  SELECT id FROM login_failures "
            "  WHERE at <= now() - make_interval(secs => %s) LIMIT %s)) "
            "INSERT INTO login_failures (scope, key, at) "
            "VALUES ('account', %s, now()), ('client', %s, now()), ('overall', '', now())",
            (self.limits.window, PRUNE_BATCH, _text(account_key(account)),
             _text(_client_key(client)))))

    def succeeded(self, account: str) -> None:
        self._state.run("clear an account's failed logins", lambda db: db.execute(
            "DELETE FROM login_failures WHERE scope = 'account' AND key = %s",
            (_text(account_key(account)),)))


def _configure(db: Connection) -> None:
    """Every connection's session: times in UTC, no statement waits long, and no
    transaction whose client vanished holds its locks for long."""
    db.execute("SET TIME ZONE 'UTC'")
    db.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    db.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")


def _one(db: Connection, query: str, params: tuple[object, ...]) -> Any:
    row = db.execute(query, params).fetchone()
    return row[0] if row else None


def _digest(session_id: str) -> str:
    """What a session is stored under: the id itself never reaches the database."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def _client_key(client: str) -> str:
    return client[:ACCOUNT_KEY_CHARS]


def _text(value: str) -> str:
    """PostgreSQL's text holds no NUL (nor a lone surrogate, in UTF-8)."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
