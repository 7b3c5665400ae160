"""SqliteStore: the durable store, an embedded SQLite file in WAL mode.

Layout (schema version 2, kept in `PRAGMA user_version`):
- `services`: one row per service that ever changed: its version (optimistic
  concurrency), incident counter, and the open incident as JSON, with the
  escalation policy snapshot taken when it opened. The armed token and its
  deadline are columns too, so recovery finds them with an index.
- `outbox`: one row per notification, keyed by its delivery id, `pending`
  until the adapter reports it `delivered` or `failed`.
- `meta` (v2): small facts of the store itself; the readiness probe's row.

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
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from adapters.statelock import StateLock
from pager_actors.domain import (
    EscalationPolicy,
    Incident,
    Level,
    MonitoredService,
    Notify,
    parse_target,
)
from pager_actors.ports import (
    ArmedTimeout,
    DeliveryResult,
    StoreCorruptError,
    StoreError,
    Transition,
    TransitionRefusedError,
    VersionConflictError,
)

SCHEMA_VERSION = 2
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

_MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2}
_TABLES = {1: {"services", "outbox"}, 2: {"services", "outbox", "meta"}}

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
                raise self._refuse("damaged: " + "; ".join(problems))
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
            with self._transaction(db):
                for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    def _prune(self) -> None:
        """Delivered rows older than a week are history, not outbox."""
        cutoff = time.time() - KEEP_DELIVERED.total_seconds()
        with self._write_lock, self._transaction(self._writer):
            self._writer.execute(
                "DELETE FROM outbox WHERE status = 'delivered' AND settled_at < ?", (cutoff,))

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
                "SELECT version, incidents_opened, incident FROM services WHERE service_id = ?",
                (service_id,)).fetchone()
        if row is None:
            return None
        version, opened, incident = row
        return MonitoredService(service_id, _incident_from_json(incident), opened, version)

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
                db.executemany(
                    "UPDATE outbox SET status = ?, settled_at = ?, last_error = ? "
                    "WHERE delivery_id = ?",
                    [("delivered" if r.error is None else "failed", now, r.error,
                      r.delivery_id) for r in deliveries])

    def probe(self) -> None:
        """Write two pages' worth into `meta`: raises StoreError while the store cannot
        commit (disk full)."""
        value = f"{time.time():.6f}".ljust(PROBE_BYTES)
        with self._write_lock, self._transaction(self._writer):
            self._writer.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (value,))

    def _apply(self, db: sqlite3.Connection, t: Transition, now: float) -> None:
        state = t.state
        incident = state.incident
        row = (state.version, state.incidents_opened, _incident_to_json(incident),
               incident.armed_token if incident else None,
               incident.ack_deadline.timestamp() if incident and incident.ack_deadline else None,
               now, state.service_id)
        if t.expected_version == 0:
            written = db.execute(
                "INSERT INTO services (version, incidents_opened, incident, armed_token, "
                "ack_deadline, updated_at, service_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (service_id) DO NOTHING", row).rowcount
        else:
            written = db.execute(
                "UPDATE services SET version = ?, incidents_opened = ?, incident = ?, "
                "armed_token = ?, ack_deadline = ?, updated_at = ? "
                "WHERE service_id = ? AND version = ?", (*row, t.expected_version)).rowcount
        if written != 1:
            found = db.execute("SELECT version FROM services WHERE service_id = ?",
                               (state.service_id,)).fetchone()
            raise VersionConflictError(state.service_id, t.expected_version,
                                       found[0] if found else None)
        notes = [e for e in t.effects if isinstance(e, Notify)]
        if notes:
            db.executemany(
                "INSERT INTO outbox (delivery_id, service_id, incident, level, target, subject, "
                "body, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(n.key, n.service_id, n.incident, n.level, n.target.uri, n.subject, n.text, now)
                 for n in notes])

    def armed_timeouts(self) -> list[ArmedTimeout]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT service_id, armed_token, ack_deadline FROM services "
                "WHERE armed_token IS NOT NULL").fetchall()
        return [ArmedTimeout(sid, token, datetime.fromtimestamp(deadline, UTC))
                for sid, token, deadline in rows]

    def undelivered(self) -> list[Notify]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT service_id, incident, level, target, subject, body FROM outbox "
                "WHERE status = 'pending' ORDER BY created_at").fetchall()
        return [Notify(sid, incident, level, parse_target(target), subject, body)
                for sid, incident, level, target, subject, body in rows]

    def open_incidents(self) -> int:
        with self._read_lock:
            return int(self._reader.execute(
                "SELECT count(*) FROM services WHERE incident IS NOT NULL").fetchone()[0])

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


# -- JSON of an open incident ------------------------------------------------------


def _incident_to_json(incident: Incident | None) -> str | None:
    if incident is None:
        return None
    return json.dumps({
        "number": incident.number, "message": incident.message, "level": incident.level,
        "acknowledged": incident.acknowledged, "armed_token": incident.armed_token,
        "ack_deadline": incident.ack_deadline.isoformat() if incident.ack_deadline else None,
        "policy": _policy_to_json(incident.policy),
    }, separators=(",", ":"))


def _incident_from_json(text: str | None) -> Incident | None:
    if text is None:
        return None
    data = json.loads(text)
    deadline = data["ack_deadline"]
    return Incident(data["number"], data["message"], _policy_from_json(data["policy"]),
                    data["level"], data["acknowledged"], data["armed_token"],
                    datetime.fromisoformat(deadline) if deadline else None)


@lru_cache(maxsize=4096)
def _policy_to_json(policy: EscalationPolicy) -> dict[str, Any]:
    return {"service_id": policy.service_id,
            "levels": [[t.uri for t in level.targets] for level in policy.levels]}


_policies_seen: dict[str, EscalationPolicy] = {}


def _policy_from_json(data: dict[str, Any]) -> EscalationPolicy:
    """Decode a policy snapshot, sharing one object per distinct snapshot."""
    key = json.dumps(data, sort_keys=True)
    policy = _policies_seen.get(key)
    if policy is None:
        policy = EscalationPolicy(data["service_id"], [
            Level([parse_target(uri) for uri in level]) for level in data["levels"]])
        if len(_policies_seen) < 65536:
            _policies_seen[key] = policy
    return policy

