"""The cluster's throttle ledger on PostgreSQL: every node claims its throttled sends in one
table, so a contact's budget (`max_per_contact` per window) holds over the whole cluster
(issue 11), not once per node.

The table, `contact_sends` (one row per send claimed: channel, contact URI,
when), is NOT created here: it belongs to PostgresStore's versioned migrations
(its schema v4), which the daemon runs when it opens its store, before it opens
this. This module refuses to open on a database that does not have it.

A claim is one short transaction that owns its contact for its duration:
`pg_advisory_xact_lock(hashtextextended(channel || ':' || contact, 0))`
serializes the claims of one contact (whichever node makes them), then the
database's clock is read (`clock_timestamp()`, after the lock, so claims of one
contact are stamped in the order they were made), the sends in the window
counted, and one row inserted if there is room. Otherwise nothing is written
and the wait returned is when the `limit`-th newest send leaves the window. Each
insert also deletes up to `PRUNE_BATCH` rows of its channel past the window
(never more rows than claims are kept past it). Time is the database's: nodes
whose clocks disagree agree on the window.

Failure: PostgreSQL errors become StoreError, whose message never carries the
password; the engine then sends anyway (fails open) and counts it. After a
failure the ledger is not asked again for `retry_after` seconds (each claim
then fails at once), so a database that is down costs the lanes one
`timeout` per `retry_after`, not one per page.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from adapters.pg_conn import open_pool
from adapters.postgres import PostgresTarget, configure_session
from pager_actors.ports import StoreError

TABLE = "contact_sends"  # created by PostgresStore's schema v4 (adapters/postgres.py)
PRUNE_BATCH = 100  # rows past the window deleted at most, per claim that inserts
MIN_WAIT = 0.001  # a refusal always asks for some wait: the lanes hold, never spin

Connection = psycopg.Connection[tuple[Any, ...]]


class PgSendLedger:
    """A SendLedger (`pager_actors.ports`) in one PostgreSQL database, shared by every node.
    Thread-safe: a small pool of connections, so several adapter actors claim at once.
    `close()` when done.

    `dsn` is the store's `postgresql://` URL or connection string. `timeout`
    bounds how long a claim waits for a connection; `retry_after`, how long a
    failure is remembered (claims fail at once meanwhile). Opening connects and
    checks that the table exists, or raises StoreError.
    """

    def __init__(self, dsn: str, *, timeout: float = 2.0, connections: int = 4,
                 retry_after: float = 5.0,
                 application_name: str = "pager-actors-throttle") -> None:
        self._target = PostgresTarget.parse(dsn, application_name=application_name)
        self.where = self._target.where
        self._timeout = timeout
        self._retry_after = retry_after
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic; claims before it fail at once
        self._down_reason = ""
        self._pool = open_pool(self._target, what="the throttle ledger", tables=(TABLE,),
                               connections=connections, timeout=timeout,
                               configure=configure_session, name="pager-throttle")

    def _reason(self, error: BaseException) -> str:
        return self._target.reason(error) or type(error).__name__

    def claim(self, channel: str, contact: str, limit: int, window: float) -> float | None:
        with self._lock:
            if time.monotonic() < self._down_until:
                raise StoreError(f"{self.where}: the throttle ledger is not asked for "
                                 f"{self._retry_after:g} s after a failure "
                                 f"({self._down_reason})")
        try:
            with self._pool.connection() as db, db.transaction():
                return _claim(db, channel, contact, limit, window)
        except PoolTimeout:
            reason = f"no connection to PostgreSQL within {self._timeout:g} s"
        except psycopg.Error as error:
            reason = self._reason(error)
        with self._lock:
            self._down_until = time.monotonic() + self._retry_after
            self._down_reason = reason
        raise StoreError(f"{self.where}: cannot claim a send: {reason}")

    def close(self) -> None:
        self._pool.close()


def _claim(db: Connection, channel: str, contact: str, limit: int,
           window: float) -> float | None:
    """The claim, inside its transaction: see the module's docstring."""
    channel, contact = _text(channel), _text(contact)
    db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
               (f"{channel}:{contact}",))
    row = db.execute(
        "SELECT now.t, (SELECT EXTRACT(EPOCH FROM s.at + make_interval(secs => %s) - now.t) "
        "  FROM contact_sends AS s WHERE s.channel = %s AND s.contact = %s "
        "  AND s.at > now.t - make_interval(secs => %s) "
        "  ORDER BY s.at DESC OFFSET %s LIMIT 1) "
        "FROM (SELECT clock_timestamp() AS t) AS now",
        (window, channel, contact, window, max(limit - 1, 0))).fetchone()
    assert row is not None
    now, wait = row
    if wait is not None:
        return max(float(wait), MIN_WAIT)
    db.execute(
        "WITH pruned AS (DELETE FROM contact_sends WHERE id IN ("
        "  SELECT id FROM contact_sends WHERE at <= %s - make_interval(secs => %s) "
        "  AND channel = %s LIMIT %s FOR UPDATE SKIP LOCKED)) "
        "INSERT INTO contact_sends (channel, contact, at) VALUES (%s, %s, %s)",
        (now, window, channel, PRUNE_BATCH, channel, contact, now))
    return None


def _text(value: str) -> str:
    """PostgreSQL's text holds no NUL (nor a lone surrogate, in UTF-8)."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
