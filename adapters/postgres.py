"""PostgresStore: the durable store on PostgreSQL (psycopg 3), the same port as SqliteStore.

Layout (schema version 1, kept in `meta`; migrated on open under an advisory
transaction lock, so several processes starting at once on a new database
migrate it once):
- `services`: one row per service that ever changed: its version (optimistic
  concurrency), its whole state as JSON text (`adapters.state_json`), the
  timers it relies on, the number of its open incident (NULL when none) and
  whether it holds a reply code, so no query parses JSON.
- `outbox`: one row per page, `pending` until `delivered`, `failed` or
  `withdrawn`, as in SQLite; `seq` keeps the order of the rows of one commit.
- `timeline`, `overrides`: as in SQLite.
- `meta`: the schema version, the shard count, one row per migration run, the
  readiness probe's row.
- v2 adds the cluster's `leases`, `nodes` and `commands`; v3 the console's
  `console_sessions`, `login_failures` and `console_keys`; v4 `contact_sends`,
  the cluster's throttle ledger (`adapters/pg_throttle.py`).
Every services and outbox row carries `shard` (`pager_actors.cluster.shard_of`),
indexed, so that one shard's services can be loaded, re-armed and resent; the
recovery reads take a `shards` filter.

Same semantics as SqliteStore: a commit is one transaction (PostgreSQL's
default `synchronous_commit = on`: once it returns, the data is on disk); a
transition refused on its own account (a version conflict, a value PostgreSQL
cannot hold, text UTF-8 cannot encode) raises TransitionRefusedError naming
its service and rolls the whole call back; anything else raises StoreError
with PostgreSQL's own words. Times are `timestamptz` (exact to the
microsecond, as Python's datetimes); the state's own times stay in its JSON.

Text: PostgreSQL's `text` cannot hold NUL. The state is JSON with every
non-ASCII character escaped, so it keeps a NUL exactly; in the other text
columns (timeline messages, gateway errors) a NUL is stored as U+FFFD, as a
gateway error's lone surrogate becomes `?` in both SQL stores.

Fencing (a cluster, issue 11): with `set_fence(keeper.fence)`, each commit first
checks, in its own transaction, that every transition's shard lease is still
this node's at the epoch it holds (and unexpired by the database's clock),
locking those lease rows FOR SHARE until it ends; a transition whose shard is
not confirmed raises ShardLostError (a TransitionRefusedError: the rest of the
batch can commit). Delivery results are never fenced: a page sent is a fact.
Without a fence, commits are what they always were.

Connections: one writer connection, under a lock (the engine's StoreWriter is
its only caller on the hot path), and a `psycopg_pool.ConnectionPool` for
reads, which checks a connection before lending it. A connection PostgreSQL
dropped (a restart, a failover) fails the call it was in with StoreError; the
next call connects again by itself. If it drops during COMMIT itself, the
store asks the server, on a new connection, whether that transaction committed
(`pg_xact_status`), and only reports the outcome it learns. Nothing here needs
a lock file: a PostgreSQL state is shared by design (the cluster's shard
leases, `adapters/pg_cluster.py`, say who writes what).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from adapters import state_json
from pager_actors.cluster import SHARDS, shard_of
from pager_actors.domain import (
    ArmedTimer,
    IncidentSummary,
    MonitoredService,
    Notify,
    Record,
    TimelineEntry,
    parse_contact,
)
from pager_actors.domain.model import reply_codes_of
from pager_actors.domain.timeline import summarize
from pager_actors.logs import get_logger
from pager_actors.oncall import Override
from pager_actors.ports import (
    DeliveryResult,
    ShardLostError,
    StoreCorruptError,
    StoreError,
    Transition,
    TransitionRefusedError,
    VersionConflictError,
)

log = get_logger("pager_actors.adapters.postgres")

SCHEMA_VERSION = 4
KEEP_DELIVERED = timedelta(days=7)
PROBE_BYTES = 8192
# The advisory lock every pager process takes to migrate: one key they all agree on.
MIGRATION_LOCK = zlib.crc32(b"pager-actors schema migration")
STATEMENT_TIMEOUT = "30s"  # no call waits on PostgreSQL forever (a lock, a stuck disk)
# Our transactions never wait on a person: a session idle inside one has lost its client
# (a connection cut before its COMMIT), and the server ends it, freeing its row locks.
IDLE_IN_TRANSACTION_TIMEOUT = "15s"

_TABLES = {"meta", "services", "outbox", "timeline", "overrides", "leases", "nodes", "commands",
           "console_sessions", "login_failures", "console_keys", "contact_sends"}

_SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE services (
        service_id    TEXT PRIMARY KEY,
        shard         SMALLINT NOT NULL,
        version       BIGINT NOT NULL,
        state         TEXT NOT NULL,
        timers        TEXT,
        open_incident BIGINT,
        codes         BOOLEAN NOT NULL,
        updated_at    TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX services_shard ON services (shard)",
    "CREATE INDEX services_timers ON services (shard) WHERE timers IS NOT NULL",
    "CREATE INDEX services_codes ON services (shard) WHERE codes",
    """CREATE TABLE outbox (
        delivery_id TEXT PRIMARY KEY,
        seq         BIGINT GENERATED ALWAYS AS IDENTITY,
        service_id  TEXT NOT NULL,
        shard       SMALLINT NOT NULL,
        incident    BIGINT NOT NULL,
        level       BIGINT NOT NULL,
        round       BIGINT NOT NULL,
        page        BIGINT NOT NULL,
        target      TEXT NOT NULL,
        subject     TEXT NOT NULL,
        body        TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'failed', 'withdrawn')),
        created_at  TIMESTAMPTZ NOT NULL,
        settled_at  TIMESTAMPTZ,
        last_error  TEXT,
        carried_by  TEXT,
        reply_code  TEXT)""",
    "CREATE INDEX outbox_pending ON outbox (shard, created_at, seq) WHERE status = 'pending'",
    "CREATE INDEX outbox_sent ON outbox (target, settled_at) WHERE status = 'delivered'",
    """CREATE TABLE timeline (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        service_id TEXT NOT NULL,
        incident   BIGINT,
        at         TIMESTAMPTZ NOT NULL,
        event      TEXT NOT NULL,
        level      BIGINT,
        round      BIGINT,
        target     TEXT,
        channel    TEXT,
        error      TEXT,
        by         TEXT,
        key        TEXT,
        message    TEXT,
        user_id    TEXT,
        via        TEXT)""",
    "CREATE INDEX timeline_incident ON timeline (service_id, incident)",
    "CREATE INDEX timeline_at ON timeline (at)",
    """CREATE TABLE overrides (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        rotation   TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        start_at   TIMESTAMPTZ NOT NULL,
        end_at     TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX overrides_rotation ON overrides (rotation, end_at)",
)

# v2, the cluster (issue 11): one lease row per shard, whose epoch grows at each change of
# holder (the fencing token every commit checks); the nodes that renew them; and the
# commands one node forwards to the holder of their service's shard.
_SCHEMA_V2 = (
    """CREATE TABLE leases (
        shard       SMALLINT PRIMARY KEY,
        node        TEXT,
        epoch       BIGINT NOT NULL DEFAULT 0,
        expires_at  TIMESTAMPTZ,
        acquired_at TIMESTAMPTZ)""",
    f"INSERT INTO leases (shard) SELECT generate_series(0, {SHARDS - 1})",
    """CREATE TABLE nodes (
        node        TEXT PRIMARY KEY,
        started_at  TIMESTAMPTZ NOT NULL,
        last_seen   TIMESTAMPTZ NOT NULL,
        config_hash TEXT NOT NULL,
        leaving     BOOLEAN NOT NULL DEFAULT FALSE)""",
    """CREATE TABLE commands (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        shard       SMALLINT NOT NULL,
        service_id  TEXT NOT NULL,
        command     TEXT NOT NULL,
        origin      TEXT NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL,
        taken_by    TEXT,
        answer      TEXT,
        answered_at TIMESTAMPTZ)""",
    "CREATE INDEX commands_waiting ON commands (shard, id) WHERE taken_by IS NULL",
)

# v3, the console in a cluster: its sessions (by the SHA-256 of their id), failed logins
# and the login form's key, shared by every node (adapters/pg_console.py).
_SCHEMA_V3 = (
    """CREATE TABLE console_sessions (
        id_digest  TEXT PRIMARY KEY,
        user_id    TEXT NOT NULL,
        csrf       TEXT NOT NULL,
        credential TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        flash_kind TEXT,
        flash_text TEXT)""",
    "CREATE INDEX console_sessions_expiry ON console_sessions (expires_at)",
    """CREATE TABLE login_failures (
        id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        scope TEXT NOT NULL CHECK (scope IN ('account', 'client', 'overall')),
        key   TEXT NOT NULL,
        at    TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX login_failures_window ON login_failures (scope, key, at)",
    "CREATE INDEX login_failures_at ON login_failures (at)",
    """CREATE TABLE console_keys (
        name TEXT PRIMARY KEY,
        key  BYTEA NOT NULL CHECK (octet_length(key) >= 32))""",
)

# v4, the cluster's throttle: one row per send to a contact that a throttled channel
# claimed (adapters/pg_throttle.py), so every node counts the same budget.
_SCHEMA_V4 = (
    """CREATE TABLE contact_sends (
        id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel TEXT NOT NULL,
        contact TEXT NOT NULL,
        at      TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX contact_sends_window ON contact_sends (channel, contact, at)",
    "CREATE INDEX contact_sends_at ON contact_sends (at)",
)

_MIGRATIONS: dict[int, tuple[str, ...]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3,
                                           4: _SCHEMA_V4}

# A transition's own fault (a value PostgreSQL cannot hold, a broken constraint, text UTF-8
# cannot encode): that transition is refused and the rest of its batch can commit.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, ValueError, OverflowError, TypeError)

# What each connection is given unless the URL says otherwise: a dead server or network is
# noticed in seconds, not when TCP gives up (minutes).
_CONNECTION_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10",
                        "keepalives_interval": "5", "keepalives_count": "3",
                        "tcp_user_timeout": "15000"}

Connection = psycopg.Connection[tuple[Any, ...]]
# A cluster node's leases, as the commit fence reads them: (node, {shard: epoch}).
Fence = Callable[[], tuple[str, Mapping[int, int]]]
T = TypeVar("T")


@dataclass(frozen=True)
class PostgresTarget:
    """Where a component connects (a URL or libpq string, parsed once) and how to speak of it:
    `where` names server and database, `reason()` quotes an error without the password.

    Shared by the store and the cluster's `LeaseKeeper`. `params` are the connection
    keywords: `defaults`, then `application_name`, then what the DSN sets, then
    `overrides` (what the component must decide itself, whatever the DSN says).
    """

    params: dict[str, Any]
    where: str
    secret: str = field(repr=False)

    @classmethod
    def parse(cls, dsn: str, *, application_name: str,
              defaults: Mapping[str, str] = _CONNECTION_DEFAULTS,
              overrides: Mapping[str, str] | None = None) -> PostgresTarget:
        """Raises StoreError, without quoting `dsn`, if it is not a URL or connection
        string."""
        try:
            given = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreError("not a PostgreSQL URL or connection string (its text is not "
                             "shown: it may hold a password)") from None
        host = str(given.get("host") or given.get("hostaddr") or "localhost")
        return cls(params={**defaults, "application_name": application_name, **given,
                           **(overrides or {})},
                   where=(f"PostgreSQL at {host}:{given.get('port') or 5432}/"
                          f"{given.get('dbname') or given.get('user') or ''}"),
                   secret=str(given.get("password") or ""))

    def reason(self, error: BaseException) -> str:
        """PostgreSQL's own words (first line), the case an operator must act on named
        plainly, and never the password."""
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if self.secret:
            text = text.replace(self.secret, "****")
        if getattr(error, "sqlstate", None) == "53100":
            return f"disk full ({text})"
        return text

    def connect(self, setup: Callable[[Connection], None] | None = None) -> Connection:
        """A new autocommit connection, its session set up (`configure_session`, then
        `setup`); StoreError in PostgreSQL's words, without the password, if it cannot be
        had."""
        try:
            db: Connection = psycopg.connect(**self.params, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: cannot connect: {self.reason(error)}") from error
        try:
            configure_session(db)
            if setup is not None:
                setup(db)
        except psycopg.Error as error:
            db.close()
            raise StoreError(f"{self.where}: cannot set up the connection: "
                             f"{self.reason(error)}") from error
        return db


class _StaleConnection(Exception):
    """The writer connection died before COMMIT was sent: nothing was applied."""

    def __init__(self, error: StoreError) -> None:
        super().__init__(str(error))
        self.error = error


class PostgresStore:
    """A StateStore on one PostgreSQL database. Thread-safe: one writer connection and a
    pool of readers.

    `dsn` is a `postgresql://` URL or a libpq connection string; what it sets wins
    over the store's defaults (connect and keepalive timeouts). `timeout` bounds
    how long a read waits for a connection. Opening connects, migrates the schema
    (under an advisory lock) and prunes old outbox rows, or raises StoreError:
    PostgreSQL unreachable, refusing the login, or holding a schema this program
    does not know (newer, or tables of ours without a version, StoreCorruptError).
    No message ever carries the password.
    """

    group_commit: ClassVar[bool] = True

    def __init__(self, dsn: str, *, timeout: float = 5.0, read_connections: int = 4,
                 application_name: str = "pager-actors") -> None:
        self._target = PostgresTarget.parse(dsn, application_name=application_name)
        self._params = self._target.params
        self.where = self._target.where
        self._timeout = timeout
        self._write_lock = threading.Lock()
        self._fence: Fence | None = None
        self._idle_timeout: float | None = None
        self._writer: Connection | None = None
        self._closed = False
        self._writer = self._connect()
        try:
            self._migrate()
            self._prune()
            self._pool: ConnectionPool[Connection] = ConnectionPool(
                kwargs={**self._params, "autocommit": True}, min_size=1,
                max_size=max(read_connections, 1), open=False, configure=configure_session,
                check=ConnectionPool.check_connection, timeout=timeout,
                # A pool that gave up reconnecting grows again at the next read: a read
                # after PostgreSQL returns waits at most this long for its backoff.
                reconnect_timeout=timeout, name="pager-store-reads")
            try:
                self._pool.open(wait=True, timeout=timeout)
            except psycopg.Error as error:
                self._pool.close()
                raise StoreError(f"{self.where}: cannot open read connections: "
                                 f"{self._reason(error)}") from error
        except BaseException:
            self._writer.close()
            raise

    # -- connections -------------------------------------------------------------

    def _reason(self, error: BaseException) -> str:
        return self._target.reason(error)

    def _connect(self) -> Connection:
        return self._target.connect(self._limit_idle)

    def _drop_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, what: str, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction on the writer connection (connecting first if the
        last one was lost). TransitionRefusedError and StoreError raised by `work` pass
        through; a PostgreSQL error becomes StoreError; the transaction rolls back.

        A connection that was kept from an earlier call may have died meanwhile (the
        server restarted): if it turns out dead before COMMIT was sent, nothing was
        applied, and `work` runs once more on a new connection."""
        with self._write_lock:
            if self._closed:
                raise StoreError(f"{self.where}: the store is closed")
            kept = self._writer is not None
            while True:
                try:
                    return self._transaction(what, work)
                except _StaleConnection as stale:
                    if not kept:
                        raise stale.error from stale.__cause__
                    kept = False
                    log.info("store_reconnecting", store=self.where, during=what)

    def _transaction(self, what: str, work: Callable[[Connection], T]) -> T:
        if self._writer is None:
            self._writer = self._connect()
            log.info("store_reconnected", store=self.where)
        db = self._writer
        xid: str | None = None
        committing = False
        try:
            with db.transaction():
                result = work(db)
                row = db.execute("SELECT pg_current_xact_id_if_assigned()::text").fetchone()
                xid = row[0] if row else None
                committing = True  # leaving the block sends COMMIT
        except psycopg.Error as error:
            reason = self._reason(error)
            if not db.closed:
                raise StoreError(f"{self.where}: {what} failed: {reason}") from error
            self._drop_writer()
            log.warning("store_connection_lost", store=self.where, during=what,
                        reason=reason)
            if not (committing and xid):
                raise _StaleConnection(StoreError(
                    f"{self.where}: {what} failed: connection to PostgreSQL lost ({reason}); "
                    "nothing was applied")) from error
            outcome = self._outcome(xid)
            if outcome == "committed":
                log.warning("store_commit_confirmed", store=self.where, during=what)
                return result
            if outcome == "aborted":
                raise StoreError(f"{self.where}: {what} failed: connection to PostgreSQL "
                                 f"lost while committing ({reason}); it did not commit"
                                 ) from error
            raise StoreError(f"{self.where}: {what} failed: connection to PostgreSQL lost "
                             f"while committing ({reason}); whether it committed is "
                             "unknown") from error
        return result

    def _outcome(self, xid: str) -> str | None:
        """After the connection dropped during COMMIT: whether that transaction committed
        ('committed', 'aborted'), asked on a new connection; None if that cannot be told
        within the store's timeout."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._writer = self._writer or self._connect()
                row = self._writer.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except (StoreError, psycopg.Error):
                self._drop_writer()
                return None
            status = row[0] if row else None
            if status != "in progress":
                return status
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)  # the server is still finishing it

    def _read(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as db:
                return db.execute(query, params).fetchall()
        except PoolTimeout as error:
            raise StoreError(f"{self.where}: cannot read: no connection to PostgreSQL within "
                             f"{self._timeout:g} s") from error
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: read failed: {self._reason(error)}") from error

    # -- opening -----------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, holding the migration lock: whoever comes
        second finds the work done."""

        def migrate(db: Connection) -> None:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            tables = {name for (name,) in db.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            version = 0
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                                 ).fetchone()
                version = int(row[0]) if row else 0
            if version == 0 and tables & _TABLES:
                names = ", ".join(sorted(tables & _TABLES))
                raise StoreCorruptError(f"{self.where}: holds tables named like a pager's "
                                        f"({names}) but no pager schema version; refusing "
                                        "to touch them")
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.where}: schema version {version} is newer than this "
                                 f"program's {SCHEMA_VERSION}; the database was left untouched")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                # No ON CONFLICT: a migration that ran twice fails instead of passing unseen.
                db.execute("INSERT INTO meta (key, value) VALUES (%s, %s)",
                           (f"migrated_to_{target}", datetime.now(UTC).isoformat()))
            if version < SCHEMA_VERSION:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (str(SCHEMA_VERSION),))
            row = db.execute("SELECT value FROM meta WHERE key = 'shards'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('shards', %s)", (str(SHARDS),))
            elif int(row[0]) != SHARDS:
                raise StoreError(f"{self.where}: its rows are spread over {row[0]} shards, this "
                                 f"program uses {SHARDS}; the database was left untouched")

        self._write("opening", migrate)

    def _prune(self) -> None:
        """Delivered and withdrawn rows older than a week are history, not outbox."""
        cutoff = datetime.now(UTC) - KEEP_DELIVERED
        self._write("pruning", lambda db: db.execute(
            "DELETE FROM outbox WHERE status IN ('delivered', 'withdrawn') AND settled_at < %s",
            (cutoff,)))

    def schema_version(self) -> int:
        [(value,)] = self._read("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(value)

    # -- the port ----------------------------------------------------------------

    def load(self, service_id: str) -> MonitoredService | None:
        rows = self._read("SELECT version, state FROM services WHERE service_id = %s",
                          (service_id,))
        if not rows:
            return None
        [(version, state)] = rows
        return state_json.decode(service_id, version, state)

    def set_fence(self, fence: Fence | None, *, idle_timeout: float | None = None) -> None:
        """Check every later commit's transitions against the shard leases `fence()` names
        (a cluster node's `LeaseKeeper.fence`); None: no check, as on a lone node.

        `idle_timeout` (seconds; a third of the lease TTL, say): how long PostgreSQL lets
        the writer's session sit idle inside a transaction. A node paused in the middle
        of a commit holds its lease rows FOR SHARE, and the other nodes skip locked rows
        when they take lapsed leases: the server must end that transaction well within
        the TTL, not after the default 15 s."""
        with self._write_lock:
            self._fence = fence
            self._idle_timeout = idle_timeout
            if self._writer is not None and idle_timeout is not None:
                try:
                    self._limit_idle(self._writer)
                except psycopg.Error:
                    self._drop_writer()  # the next write connects and sets it

    def _limit_idle(self, db: Connection) -> None:
        if self._idle_timeout is not None:
            db.execute(f"SET idle_in_transaction_session_timeout = "
                       f"'{max(int(self._idle_timeout * 1000), 100)}ms'")

    def commit(self, transitions: Sequence[Transition],
               deliveries: Sequence[DeliveryResult] = ()) -> None:
        now = datetime.now(UTC)
        fence = self._fence

        def apply(db: Connection) -> None:
            if fence is not None and transitions:
                _check_fence(db, transitions, *fence())
            for t in transitions:
                try:
                    self._apply(db, t, now)
                except _REFUSED as error:
                    raise TransitionRefusedError(t.state.service_id,
                                                 self._reason(error)) from error
            if deliveries:
                self._settle(db, deliveries, now)

        self._write("commit", apply)

    def _apply(self, db: Connection, t: Transition, now: datetime) -> None:
        state = t.state
        incident = state.incident
        row = (state.version, state_json.encode(state), _timers(state),
               incident.number if incident is not None else None,
               (incident is not None and incident.reply_code is not None)
               or bool(state.released_codes), now, state.service_id)
        if t.expected_version == 0:
            written = db.execute(
                "INSERT INTO services (version, state, timers, open_incident, codes, "
                "updated_at, service_id, shard) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (service_id) DO NOTHING", (*row, shard_of(state.service_id))
            ).rowcount
        else:
            written = db.execute(
                "UPDATE services SET version = %s, state = %s, timers = %s, open_incident = %s, "
                "codes = %s, updated_at = %s WHERE service_id = %s AND version = %s",
                (*row, t.expected_version)).rowcount
        if written != 1:
            found = db.execute("SELECT version FROM services WHERE service_id = %s",
                               (state.service_id,)).fetchone()
            raise VersionConflictError(state.service_id, t.expected_version,
                                       found[0] if found else None)
        notes = [e for e in t.effects if isinstance(e, Notify)]
        records = [e for e in t.effects if isinstance(e, Record)]
        if notes or records:
            _insert_effects(db, notes, records, now)

    def _settle(self, db: Connection, deliveries: Sequence[DeliveryResult],
                now: datetime) -> None:
        """Mark the rows, and append each page's outcome to its incident's timeline."""
        results = {r.delivery_id: r._replace(error=_storable(r.error),
                                             carried_by=_storable(r.carried_by))
                   for r in deliveries}
        with db.cursor() as cursor:
            cursor.executemany(
                "UPDATE outbox SET status = %s, settled_at = %s, last_error = %s, "
                "carried_by = %s WHERE delivery_id = %s",
                [("withdrawn" if r.withdrawn else "delivered" if r.error is None else "failed",
                  now, r.error, r.carried_by, key) for key, r in results.items()])
            rows = cursor.execute(
                "SELECT delivery_id, service_id, incident, level, round, target FROM outbox "
                "WHERE delivery_id = ANY(%s) ORDER BY seq", (list(results),)).fetchall()
            if rows:
                cursor.executemany(_INSERT_ENTRY, [
                    _entry_row(sid, Notify(sid, incident, level, parse_contact(target), "", "",
                                           key, round_).outcome(now, results[key].error,
                                                                results[key].withdrawn))
                    for key, sid, incident, level, round_, target in rows])

    def add_override(self, rotation: str, user: str, start: datetime, end: datetime,
                     created: datetime) -> Override:
        def add(db: Connection) -> int:
            row = db.execute(
                "INSERT INTO overrides (rotation, user_id, start_at, end_at, created_at) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (_text(rotation), _text(user), start, end, created)).fetchone()
            assert row is not None
            return int(row[0])

        return Override(self._write("adding an override", add), user, start, end)

    def remove_override(self, rotation: str, override: int) -> bool:
        return self._write("removing an override", lambda db: db.execute(
            "DELETE FROM overrides WHERE rotation = %s AND id = %s",
            (rotation, override)).rowcount == 1)

    def overrides(self) -> dict[str, list[Override]]:
        found: dict[str, list[Override]] = {}
        for rotation, number, user, start, end in self._read(
                "SELECT rotation, id, user_id, start_at, end_at FROM overrides ORDER BY id"):
            found.setdefault(rotation, []).append(Override(number, user, _utc(start),
                                                           _utc(end)))
        return found

    def prune_overrides(self, before: datetime) -> int:
        return self._write("pruning overrides", lambda db: db.execute(
            "DELETE FROM overrides WHERE end_at < %s", (before,)).rowcount)

    def probe(self) -> None:
        """Write a row into `meta` and commit: raises StoreError while no write can commit
        (PostgreSQL down or read-only, disk full)."""
        value = f"{time.time():.6f}".ljust(PROBE_BYTES)
        self._write("probe", lambda db: db.execute(
            "INSERT INTO meta (key, value) VALUES ('probe', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (value,)))

    def armed_timers(self, *, shards: Collection[int] | None = None) -> list[ArmedTimer]:
        rows = self._read("SELECT service_id, timers FROM services WHERE timers IS NOT NULL"
                          + _in_shards(shards), _shard_params(shards))
        return [ArmedTimer(sid, token, datetime.fromisoformat(deadline))
                for sid, timers in rows for token, deadline in json.loads(timers)]

    def undelivered(self, *, shards: Collection[int] | None = None) -> list[Notify]:
        rows = self._read(
            "SELECT service_id, incident, level, target, subject, body, delivery_id, round, "
            "page, reply_code FROM outbox WHERE status = 'pending'" + _in_shards(shards)
            + " ORDER BY created_at, seq", _shard_params(shards))
        return [Notify(sid, incident, level, parse_contact(target), *rest)
                for sid, incident, level, target, *rest in rows]

    def open_incidents(self) -> int:
        [(count,)] = self._read("SELECT count(*) FROM services WHERE open_incident IS NOT NULL")
        return int(count)

    def recent_sends(self, since: datetime) -> list[tuple[str, datetime]]:
        rows = self._read(
            "SELECT target, min(settled_at) AS at FROM outbox "
            "WHERE status = 'delivered' AND settled_at >= %s "
            "GROUP BY target, coalesce(carried_by, delivery_id) ORDER BY at", (since,))
        return [(target, _utc(at)) for target, at in rows]

    def reply_codes(self, *, shards: Collection[int] | None = None
                    ) -> list[tuple[str, str, int, datetime | None]]:
        rows = self._read("SELECT service_id, version, state FROM services WHERE codes"
                          + _in_shards(shards), _shard_params(shards))
        return reply_codes_of([state_json.decode(sid, version, text)
                               for sid, version, text in rows])

    def timeline(self, service_id: str, incident: int) -> list[TimelineEntry]:
        rows = self._read(f"SELECT {_ENTRY_COLUMNS} FROM timeline "
                          "WHERE service_id = %s AND incident = %s ORDER BY id",
                          (service_id, incident))
        return [_entry(row) for row in rows]

    def incidents(self, service_id: str, limit: int = 50) -> list[IncidentSummary]:
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM timeline WHERE service_id = %s AND incident IN "
            "(SELECT DISTINCT incident FROM timeline WHERE service_id = %s "
            "AND incident IS NOT NULL ORDER BY incident DESC LIMIT %s) ORDER BY id",
            (service_id, service_id, limit + 1))  # +1: one not yet opened
        by_incident: dict[int, list[TimelineEntry]] = {}
        for row in rows:
            entry = _entry(row)
            by_incident.setdefault(entry.incident or 0, []).append(entry)
        found = (summarize(n, by_incident[n]) for n in sorted(by_incident, reverse=True))
        return [summary for summary in found if summary is not None][:limit]

    def prune_timeline(self, before: datetime) -> int:
        """Old entries go, except those of incidents still open."""
        return self._write("pruning the timeline", lambda db: db.execute(
            "DELETE FROM timeline t WHERE t.at < %s AND NOT EXISTS (SELECT 1 FROM services s "
            "WHERE s.service_id = t.service_id AND s.open_incident = t.incident)",
            (before,)).rowcount)

    def outbox(self) -> list[dict[str, Any]]:
        """Every outbox row, for inspection and tests."""
        try:
            with self._pool.connection() as db:
                return db.cursor(row_factory=dict_row).execute(
                    "SELECT * FROM outbox ORDER BY created_at, seq").fetchall()
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: read failed: {self._reason(error)}") from error

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._drop_writer()
        self._pool.close()


def configure_session(db: Connection) -> None:
    """Every connection's session: times come back in UTC; no statement waits forever, and
    no transaction whose client vanished holds its locks for long."""
    db.execute("SET TIME ZONE 'UTC'")
    db.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
    db.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")


def _check_fence(db: Connection, transitions: Sequence[Transition], node: str,
                 epochs: Mapping[int, int]) -> None:
    """The fence, first in the commit's transaction: each transition's shard must still be
    leased to `node` at the epoch it holds it by, unexpired by the database's clock.

    The confirmed lease rows are locked FOR SHARE, in shard order (the order the
    keepers lock them in, so the two never deadlock) until the commit ends: a
    takeover, which updates the row, waits for this commit or skips the row; a
    takeover that came first changed the epoch, which this check then sees.
    Raises ShardLostError naming every transition whose shard is not confirmed
    (the first in batch order, and the others in `also`).
    """
    wanted = sorted({shard_of(t.state.service_id) for t in transitions})
    held = [shard for shard in wanted if shard in epochs]
    confirmed: set[int] = set()
    if held:
        confirmed = {shard for (shard,) in db.execute(
            "SELECT l.shard FROM leases l "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS h(shard, epoch) "
            "ON l.shard = h.shard AND l.epoch = h.epoch "
            "WHERE l.node = %s AND l.expires_at > now() ORDER BY l.shard FOR SHARE OF l",
            (held, [epochs[shard] for shard in held], node))}
    lost = [t.state.service_id for t in transitions
            if shard_of(t.state.service_id) not in confirmed]
    if lost:
        shard = shard_of(lost[0])
        raise ShardLostError(lost[0], shard, node, epochs.get(shard),
                             also=tuple(dict.fromkeys(lost[1:])))


def _insert_effects(db: Connection, notes: list[Notify], records: list[Record],
                    now: datetime) -> None:
    """A transition's outbox rows and timeline entries."""
    with db.cursor() as cursor:
        if notes:
            cursor.executemany(
                "INSERT INTO outbox (delivery_id, service_id, shard, incident, level, round, "
                "page, target, subject, body, status, created_at, reply_code) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', %s, %s)",
                [(n.key, n.service_id, shard_of(n.service_id), n.incident, n.level, n.round,
                  n.page, n.target.uri, _text(n.subject), _text(n.text), now, n.reply_code)
                 for n in notes])
        if records:
            cursor.executemany(_INSERT_ENTRY,
                               [_entry_row(r.service_id, r.entry) for r in records])


def _in_shards(shards: Collection[int] | None) -> str:
    return "" if shards is None else " AND shard = ANY(%s)"


def _shard_params(shards: Collection[int] | None) -> tuple[object, ...]:
    return () if shards is None else ([int(shard) for shard in shards],)


# -- rows ---------------------------------------------------------------------------

_ENTRY_COLUMNS = ("incident, at, event, level, round, target, channel, error, by, key, message, "
                  "user_id, via")
_INSERT_ENTRY = (f"INSERT INTO timeline (service_id, {_ENTRY_COLUMNS}) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


def _entry_row(service_id: str, e: TimelineEntry) -> tuple[object, ...]:
    return (service_id, e.incident, e.at, e.event, e.level, e.round, _text(e.target),
            _text(e.channel), _text(e.error), _text(e.by), _text(e.key), _text(e.message),
            _text(e.user), _text(e.via))


def _entry(row: tuple[Any, ...]) -> TimelineEntry:
    incident, at, *rest = row
    return TimelineEntry(_utc(at), rest[0], incident, *rest[1:])


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)


def _text(value: str | None) -> str | None:
    """Text PostgreSQL can hold: a NUL becomes U+FFFD (a lone surrogate is still refused)."""
    if value is None or "\x00" not in value:
        return value
    return value.replace("\x00", "\ufffd")


def _storable(value: str | None) -> str | None:
    """A gateway's text, always storable: NUL as U+FFFD, a lone surrogate as '?'."""
    value = _text(value)
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _timers(state: MonitoredService) -> str | None:
    """The state's timers as JSON [[token, deadline], ...], or NULL when it has none."""
    timers = state.timers()
    if not timers:
        return None
    return json.dumps([[t.token, t.deadline.isoformat()] for t in timers])
