"""SqliteStore: the durable store, an embedded SQLite file in WAL mode.

Layout (schema version 4, kept in `PRAGMA user_version`; older files are
migrated on open, their rows kept):
- `services`: one row per service that ever changed: its version (optimistic
  concurrency), its whole state as JSON (`adapters.state_json`: open incident
  with the escalation policy snapshot taken when it opened, firing alerts,
  maintenance windows, heartbeat), the timers it relies on (so recovery
  finds them without decoding every state) and whether an incident is open.
- `outbox`: one row per page, keyed by its delivery id, `pending` until the
  adapter reports it `delivered` or `failed`, or the dispatcher `withdrawn` (an
  ack came while a throttle held it back); `carried_by` names the bundle that
  carried a row. Throttles are rebuilt at start from the rows delivered lately.
- `timeline`: each incident's events, appended in the same transaction as the
  state that caused them; delivery outcomes are appended as they are marked.
- `meta`: small facts of the store itself; the readiness probe's row.

Every commit is one transaction with `synchronous=FULL`: once it returns, the
data survives a process kill and a power cut. The engine batches many
services' commits into one transaction, so the flush is paid per batch.
Nothing here is SQLite-only in spirit: the same tables, the version check
and the JSON column map onto PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from adapters import state_json
from adapters.statelock import StateLock
from pager_actors.cluster import shard_of
from pager_actors.domain import (
    DEFAULT_KEY,
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
from pager_actors.oncall import Override
from pager_actors.ports import (
    DeliveryResult,
    StoreCorruptError,
    StoreError,
    Transition,
    TransitionRefusedError,
    VersionConflictError,
)

SCHEMA_VERSION = 4
KEEP_DELIVERED = timedelta(days=7)
SQLITE_HEADER = b"SQLite format 3\x00"
PROBE_BYTES = 8192

_SCHEMA_V1 = """
CREATE TABLE services (
    service_id       TEXT PRIMARY KEY,
    version          INTEGER NOT NULL,
    incidents_opened INTEGER NOT NULL,
    incident         TEXT,
    armed_token      TEXT,
    ack_deadline     REAL,
    updated_at       REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX services_armed ON services (armed_token) WHERE armed_token IS NOT NULL;
CREATE TABLE outbox (
    delivery_id TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL,
    incident    INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    target      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    created_at  REAL NOT NULL,
    settled_at  REAL,
    last_error  TEXT
) WITHOUT ROWID;
CREATE INDEX outbox_pending ON outbox (created_at) WHERE status = 'pending';
"""

# v2: a row the store writes to prove it can still write (readiness probe).
_SCHEMA_V2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

# v3: keyed alerts, rounds, windows, heartbeats and timelines. The state becomes one JSON
# column; every page keeps its own delivery id (new rows name their round and page).
_SCHEMA_V3 = """
CREATE TABLE services_v3 (
    service_id TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    timers     TEXT,
    open       INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX services_timers ON services_v3 (service_id) WHERE timers IS NOT NULL;
ALTER TABLE outbox ADD COLUMN round INTEGER NOT NULL DEFAULT 1;
ALTER TABLE outbox ADD COLUMN page INTEGER NOT NULL DEFAULT 1;
CREATE TABLE timeline (
    id       INTEGER PRIMARY KEY,
    service_id TEXT NOT NULL,
    incident INTEGER,
    at       REAL NOT NULL,
    event    TEXT NOT NULL,
    level    INTEGER,
    round    INTEGER,
    target   TEXT,
    channel  TEXT,
    error    TEXT,
    by       TEXT,
    key      TEXT,
    message  TEXT
);
CREATE INDEX timeline_incident ON timeline (service_id, incident);
CREATE INDEX timeline_at ON timeline (at);
"""


def _migrate_v3(db: sqlite3.Connection) -> None:
    """Each v2 row's incident gets the key `default` (a resolve of any key closes it)."""
    for statement in filter(str.strip, _SCHEMA_V3.split(";")):
        db.execute(statement)
    rows = db.execute("SELECT service_id, version, incidents_opened, incident, updated_at "
                      "FROM services").fetchall()
    for service_id, version, opened, incident, updated in rows:
        state = state_json.legacy_state(service_id, version, opened, incident,
                                        datetime.fromtimestamp(updated, UTC))
        db.execute("INSERT INTO services_v3 VALUES (?, ?, ?, ?, ?, ?)",
                   (service_id, version, state_json.encode(state), _timers(state),
                    int(state.incident is not None), updated))
        if (legacy := state.incident) is not None:  # its timeline starts here, for the API
            db.execute("INSERT INTO timeline (service_id, incident, at, event, level, round, "
                       "key, message) VALUES (?, ?, ?, 'opened', ?, ?, ?, ?)",
                       (service_id, legacy.number, updated, legacy.level, legacy.round,
                        DEFAULT_KEY, legacy.message))
    db.execute("DROP TABLE services")
    db.execute("ALTER TABLE services_v3 RENAME TO services")


# v4: rotation overrides; outbox rows may be `withdrawn` (an ack came before a throttled page
# went out), name the bundle that `carried_by` them and the SMS `reply_code` a bundle
# lists; a `paged` entry names the user it
# reached and how (`via`). SQLite cannot change a CHECK: the
# outbox is copied into a new table.
_SCHEMA_V4 = """
CREATE TABLE overrides (
    id         INTEGER PRIMARY KEY,
    rotation   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    start_at   REAL NOT NULL,
    end_at     REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX overrides_rotation ON overrides (rotation, end_at);
CREATE TABLE outbox_v4 (
    delivery_id TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL,
    incident    INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    round       INTEGER NOT NULL DEFAULT 1,
    page        INTEGER NOT NULL DEFAULT 1,
    target      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('pending', 'delivered', 'failed', 'withdrawn')),
    created_at  REAL NOT NULL,
    settled_at  REAL,
    last_error  TEXT,
    carried_by  TEXT,
    reply_code  TEXT
) WITHOUT ROWID;
INSERT INTO outbox_v4 (delivery_id, service_id, incident, level, round, page, target, subject,
                       body, status, created_at, settled_at, last_error)
    SELECT delivery_id, service_id, incident, level, round, page, target, subject, body,
           status, created_at, settled_at, last_error FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_v4 RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (created_at) WHERE status = 'pending';
CREATE INDEX outbox_sent ON outbox (target, settled_at) WHERE status = 'delivered';
ALTER TABLE timeline ADD COLUMN user_id TEXT;
ALTER TABLE timeline ADD COLUMN via TEXT
"""

_MIGRATIONS: dict[int, str | Callable[[sqlite3.Connection], None]] = {
    1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _migrate_v3, 4: _SCHEMA_V4}
_TABLES = {1: {"services", "outbox"}, 2: {"services", "outbox", "meta"},
           3: {"services", "outbox", "meta", "timeline"},
           4: {"services", "outbox", "meta", "timeline", "overrides"}}

# Errors that are one transition's own fault (a value SQLite cannot hold, a broken
# constraint): that transition is refused and the rest of its batch can commit.
_REFUSED = (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError,
            sqlite3.ProgrammingError, ValueError, OverflowError, TypeError)


class SqliteStore:
    """A StateStore on one SQLite file. Thread-safe: one writer and one reader connection.

    Opening it, in this order, changes nothing until every check passed:
    1. the directory must exist;
    2. an exclusive lock on `<file>.lock` (one owner per state file: a second
       pager on the same file is refused with StoreLockedError);
    3. an existing file is checked read-only: SQLite header, pager schema
       version (not newer than ours), tables, `PRAGMA quick_check`;
    4. only then is it opened for writing (WAL), migrated and pruned.
    A new file is created with mode 0600, and so are its `-wal` and `-shm`
    (SQLite gives them the database's mode): they hold contacts and alert text.
    """

    group_commit: ClassVar[bool] = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._lock = StateLock.acquire(self.path)
        try:
            self._check_existing()
            self._create_if_missing()
            self._writer = self._connect()
            try:
                self._migrate()
                self._prune()
                self._reader = self._connect()
            except BaseException:
                self._writer.close()
                raise
        except BaseException:
            self._lock.release()
            raise

    # -- opening ---------------------------------------------------------------

    def _refuse(self, reason: str) -> StoreCorruptError:
        return StoreCorruptError(f"{self.path}: not a readable pager store ({reason}); "
                                 "the file was left untouched")

    def _check_existing(self) -> None:
        """Read-only checks of a file that is already there; nothing is written."""
        try:
            with self.path.open("rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            return
        except IsADirectoryError:
            raise StoreError(f"{self.path}: is a directory, not a state file") from None
        except OSError as error:
            raise StoreError(f"{self.path}: cannot read: {error.strerror}") from error
        if not header:
            return  # empty: SQLite treats it as a new database
        if header != SQLITE_HEADER:
            raise self._refuse("not an SQLite file")
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise self._refuse(str(error)) from error
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and tables:
                raise StoreCorruptError(f"{self.path}: holds tables but no pager schema "
                                        "version; refusing to touch it")
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: schema version {version} is newer than this "
                                 f"program's {SCHEMA_VERSION}; the file was left untouched")
            if version and not _TABLES[version] <= tables:
                raise self._refuse(f"schema version {version} without its tables")
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                found = "; ".join(line.strip() for problem in problems
                                  for line in problem.splitlines() if "***" not in line)
                raise self._refuse(f"damaged: {found[:300]}")
        except sqlite3.Error as error:
            raise self._refuse(str(error)) from error
        finally:
            db.close()

    def _create_if_missing(self) -> None:
        """Create the file 0600 whatever the umask, so SQLite's -wal and -shm are 0600 too."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as error:
            raise StoreError(f"{self.path}: cannot create: {error.strerror}") from error
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=30)
            db.execute("PRAGMA busy_timeout = 30000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open: {_reason(error)}") from error
        if mode != "wal":
            db.close()
            raise StoreError(f"{self.path}: cannot use WAL journal mode (got {mode!r})")
        return db

    def _migrate(self) -> None:
        db = self._writer
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for target in range(version + 1, SCHEMA_VERSION + 1):
            step = _MIGRATIONS[target]
            with self._transaction(db):
                if callable(step):
                    step(db)
                else:
                    for statement in filter(str.strip, step.split(";")):
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    def _prune(self) -> None:
        """Delivered and withdrawn rows older than a week are history, not outbox."""
        cutoff = time.time() - KEEP_DELIVERED.total_seconds()
        with self._write_lock, self._transaction(self._writer):
            self._writer.execute(
                "DELETE FROM outbox WHERE status IN ('delivered', 'withdrawn') "
                "AND settled_at < ?", (cutoff,))

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; on any error roll back (if SQLite has not already)
        and raise what went wrong first, as a StoreError unless it is one already."""
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on SQLITE_FULL and I/O errors
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: commit failed: {_reason(error)}") from error

    def schema_version(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("PRAGMA user_version").fetchone()[0])

    # -- the port ----------------------------------------------------------------

    def load(self, service_id: str) -> MonitoredService | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT version, state FROM services WHERE service_id = ?",
                (service_id,)).fetchone()
        if row is None:
            return None
        return state_json.decode(service_id, row[0], row[1])

    def commit(self, transitions: Sequence[Transition],
               deliveries: Sequence[DeliveryResult] = ()) -> None:
        now = time.time()
        with self._write_lock, self._transaction(self._writer):
            db = self._writer
            for t in transitions:
                try:
                    self._apply(db, t, now)
                except _REFUSED as error:
                    raise TransitionRefusedError(t.state.service_id,
                                                 _reason(error)) from error
            if deliveries:
                self._settle(db, deliveries, now)

    def add_override(self, rotation: str, user: str, start: datetime, end: datetime,
                     created: datetime) -> Override:
        with self._write_lock, self._transaction(self._writer):
            cursor = self._writer.execute(
                "INSERT INTO overrides (rotation, user_id, start_at, end_at, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (rotation, user, start.timestamp(), end.timestamp(),
                                           created.timestamp()))
            assert cursor.lastrowid is not None
            return Override(cursor.lastrowid, user, start, end)

    def remove_override(self, rotation: str, override: int) -> bool:
        with self._write_lock, self._transaction(self._writer):
            return bool(self._writer.execute(
                "DELETE FROM overrides WHERE rotation = ? AND id = ?",
                (rotation, override)).rowcount)

    def overrides(self) -> dict[str, list[Override]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT rotation, id, user_id, start_at, end_at FROM overrides "
                "ORDER BY id").fetchall()
        found: dict[str, list[Override]] = {}
        for rotation, number, user, start, end in rows:
            found.setdefault(rotation, []).append(Override(
                number, user, datetime.fromtimestamp(start, UTC),
                datetime.fromtimestamp(end, UTC)))
        return found

    def prune_overrides(self, before: datetime) -> int:
        with self._write_lock, self._transaction(self._writer):
            return int(self._writer.execute("DELETE FROM overrides WHERE end_at < ?",
                                            (before.timestamp(),)).rowcount)

    def probe(self) -> None:
        """Write two pages' worth into `meta`: raises StoreError while the store cannot
        commit (disk full)."""
        value = f"{time.time():.6f}".ljust(PROBE_BYTES)
        with self._write_lock, self._transaction(self._writer):
            self._writer.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (value,))

    def _settle(self, db: sqlite3.Connection, deliveries: Sequence[DeliveryResult],
                now: float) -> None:
        """Mark the rows, and append each page's outcome to its incident's timeline."""
        results = {r.delivery_id: r._replace(error=_text(r.error)) for r in deliveries}
        db.executemany(
            "UPDATE outbox SET status = ?, settled_at = ?, last_error = ?, carried_by = ? "
            "WHERE delivery_id = ?",
            [("withdrawn" if r.withdrawn else "delivered" if r.error is None else "failed",
              now, r.error, r.carried_by, key) for key, r in results.items()])
        at = datetime.fromtimestamp(now, UTC)
        keys = list(results)
        for start in range(0, len(keys), _IN_CHUNK):  # SQLite bounds a statement's variables
            chunk = keys[start:start + _IN_CHUNK]
            rows = db.execute(
                f"SELECT delivery_id, service_id, incident, level, round, target FROM outbox "
                f"WHERE delivery_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            db.executemany(_INSERT_ENTRY, [
                _entry_row(sid, Notify(sid, incident, level, parse_contact(target), "", "", key,
                                       round_).outcome(at, results[key].error,
                                                       results[key].withdrawn))
                for key, sid, incident, level, round_, target in rows])

    def _apply(self, db: sqlite3.Connection, t: Transition, now: float) -> None:
        state = t.state
        row = (state.version, state_json.encode(state), _timers(state),
               int(state.incident is not None), now, state.service_id)
        if t.expected_version == 0:
            written = db.execute(
                "INSERT INTO services (version, state, timers, open, updated_at, service_id) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (service_id) DO NOTHING", row).rowcount
        else:
            written = db.execute(
                "UPDATE services SET version = ?, state = ?, timers = ?, open = ?, "
                "updated_at = ? WHERE service_id = ? AND version = ?",
                (*row, t.expected_version)).rowcount
        if written != 1:
            found = db.execute("SELECT version FROM services WHERE service_id = ?",
                               (state.service_id,)).fetchone()
            raise VersionConflictError(state.service_id, t.expected_version,
                                       found[0] if found else None)
        notes = [e for e in t.effects if isinstance(e, Notify)]
        if notes:
            db.executemany(
                "INSERT INTO outbox (delivery_id, service_id, incident, level, round, page, "
                "target, subject, body, status, created_at, reply_code) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                [(n.key, n.service_id, n.incident, n.level, n.round, n.page, n.target.uri,
                  n.subject, n.text, now, n.reply_code) for n in notes])
        records = [e for e in t.effects if isinstance(e, Record)]
        if records:
            db.executemany(_INSERT_ENTRY, [_entry_row(r.service_id, r.entry) for r in records])

    # The `shards` filters run here, not in SQL: one SQLite file has one owner, which reads
    # every shard (PostgresStore keeps a `shard` column for the cluster).

    def armed_timers(self, *, shards: Collection[int] | None = None) -> list[ArmedTimer]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT service_id, timers FROM services WHERE timers IS NOT NULL").fetchall()
        return [ArmedTimer(sid, token, datetime.fromisoformat(deadline))
                for sid, timers in rows if shards is None or shard_of(sid) in shards
                for token, deadline in json.loads(timers)]

    def undelivered(self, *, shards: Collection[int] | None = None) -> list[Notify]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT service_id, incident, level, target, subject, body, delivery_id, round, "
                "page, reply_code FROM outbox WHERE status = 'pending' ORDER BY created_at"
            ).fetchall()
        return [Notify(sid, incident, level, parse_contact(target), *rest)
                for sid, incident, level, target, *rest in rows
                if shards is None or shard_of(sid) in shards]

    def open_incidents(self) -> int:
        with self._read_lock:
            return int(self._reader.execute(
                "SELECT count(*) FROM services WHERE open = 1").fetchone()[0])

    def recent_sends(self, since: datetime) -> list[tuple[str, datetime]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT target, min(settled_at) AS at FROM outbox "
                "WHERE status = 'delivered' AND settled_at >= ? "
                "GROUP BY target, coalesce(carried_by, delivery_id) ORDER BY at",
                (since.timestamp(),)).fetchall()
        return [(target, datetime.fromtimestamp(at, UTC)) for target, at in rows]

    def reply_codes(self, *, shards: Collection[int] | None = None
                    ) -> list[tuple[str, str, int, datetime | None]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT service_id, version, state FROM services "
                "WHERE json_extract(state, '$.incident.reply_code') IS NOT NULL "
                "OR json_extract(state, '$.released') IS NOT NULL").fetchall()
        return reply_codes_of([state_json.decode(sid, version, text)
                               for sid, version, text in rows
                               if shards is None or shard_of(sid) in shards])

    def timeline(self, service_id: str, incident: int) -> list[TimelineEntry]:
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM timeline "
                "WHERE service_id = ? AND incident = ? ORDER BY id",
                (service_id, incident)).fetchall()
        return [_entry(row) for row in rows]

    def incidents(self, service_id: str, limit: int = 50) -> list[IncidentSummary]:
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM timeline WHERE service_id = ? AND incident IN "
                "(SELECT DISTINCT incident FROM timeline WHERE service_id = ? "
                "AND incident IS NOT NULL ORDER BY incident DESC LIMIT ?) ORDER BY id",
                (service_id, service_id, limit + 1)).fetchall()  # +1: one not yet opened
        by_incident: dict[int, list[TimelineEntry]] = {}
        for row in rows:
            entry = _entry(row)
            by_incident.setdefault(entry.incident or 0, []).append(entry)
        found = (summarize(n, by_incident[n]) for n in sorted(by_incident, reverse=True))
        return [summary for summary in found if summary is not None][:limit]

    def prune_timeline(self, before: datetime) -> int:
        """Old entries go, except those of incidents still open (an incident open for months
        keeps its whole timeline)."""
        with self._write_lock, self._transaction(self._writer):
            return int(self._writer.execute(
                "DELETE FROM timeline WHERE at < ? AND NOT EXISTS (SELECT 1 FROM services s "
                "WHERE s.service_id = timeline.service_id AND s.open = 1 "
                "AND json_extract(s.state, '$.incident.number') = timeline.incident)",
                (before.timestamp(),)).rowcount)

    def outbox(self) -> list[dict[str, Any]]:
        """Every outbox row, for inspection and tests."""
        with self._read_lock:
            cursor = self._reader.execute("SELECT * FROM outbox ORDER BY created_at")
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self._reader.close()
            self._writer.close()
        self._lock.release()


def _reason(error: BaseException) -> str:
    """SQLite's own words, with the case an operator must act on named plainly."""
    if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return f"disk full ({error})"
    return str(error) or type(error).__name__


# -- rows ---------------------------------------------------------------------------

_ENTRY_COLUMNS = ("incident, at, event, level, round, target, channel, error, by, key, message, "
                  "user_id, via")
_INSERT_ENTRY = (f"INSERT INTO timeline (service_id, {_ENTRY_COLUMNS}) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _entry_row(service_id: str, e: TimelineEntry) -> tuple[object, ...]:
    return (service_id, e.incident, e.at.timestamp(), e.event, e.level, e.round, e.target,
            e.channel, e.error, e.by, e.key, e.message, e.user, e.via)


def _entry(row: tuple[Any, ...]) -> TimelineEntry:
    incident, at, *rest = row
    return TimelineEntry(datetime.fromtimestamp(at, UTC), rest[0], incident, *rest[1:])


_IN_CHUNK = 500


def _text(value: str | None) -> str | None:
    """Text SQLite can bind: a lone surrogate (from a gateway's JSON) becomes '?'."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def _timers(state: MonitoredService) -> str | None:
    """The state's timers as JSON [[token, deadline], ...], or NULL when it has none."""
    timers = state.timers()
    if not timers:
        return None
    return json.dumps([[t.token, t.deadline.isoformat()] for t in timers])
