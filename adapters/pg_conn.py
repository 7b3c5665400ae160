"""A PostgreSQL database as the cluster's other adapters reach it: `PostgresTarget`'s
settings and masked errors (adapters/postgres.py), connections set up like the store's
(the forwarder), and checked connection pools (the console's state, the throttle ledger)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from adapters.postgres import PostgresTarget
from pager_actors.ports import StoreError

Connection = psycopg.Connection[tuple[Any, ...]]


class Database:
    """Where to connect, and how to talk about it without its password: `where` names the
    server and database, `reason(error)` quotes an error with the password as `****`."""

    def __init__(self, dsn: str, application_name: str) -> None:
        self._target = PostgresTarget.parse(dsn, application_name=application_name)
        self.where = self._target.where

    def reason(self, error: BaseException) -> str:
        return self._target.reason(error)

    def connect(self, *, autocommit: bool) -> Connection:
        """A new connection, its session set up like the store's (UTC, bounded
        statements); StoreError with the masked reason if it cannot be had."""
        return self._target.connect(lambda db: setattr(db, "autocommit", autocommit))


def open_pool(target: PostgresTarget, *, what: str, tables: Sequence[str], connections: int,
              timeout: float, configure: Callable[[Connection], None], name: str
              ) -> ConnectionPool[Connection]:
    """A pool of autocommit connections for `what` (a component's name in messages), once
    one plain connection has shown that PostgreSQL lets us in and has `tables` (a pool
    alone would only say it timed out). StoreError in PostgreSQL's words, no password."""
    params: dict[str, Any] = {**target.params, "autocommit": True}
    try:
        with psycopg.connect(**params) as db:
            missing = [table for table in tables
                       if (row := db.execute("SELECT to_regclass(%s)", (table,)).fetchone())
                       is None or row[0] is None]
    except psycopg.Error as error:
        raise StoreError(f"{target.where}: {what} cannot connect: "
                         f"{target.reason(error) or type(error).__name__}") from None
    if missing:
        raise StoreError(f"{target.where}: has no {', '.join(missing)} "
                         f"table{'s' if len(missing) > 1 else ''} for {what}: the PostgreSQL "
                         "store creates them when it opens (its schema migrations)")
    pool: ConnectionPool[Connection] = ConnectionPool(
        kwargs=params, min_size=1, max_size=max(connections, 1), open=False,
        configure=configure, check=ConnectionPool.check_connection, timeout=timeout,
        reconnect_timeout=timeout, name=name)
    try:
        pool.open(wait=True, timeout=timeout)
    except (psycopg.Error, PoolTimeout) as error:
        pool.close()
        raise StoreError(f"{target.where}: {what} cannot open its connections: "
                         f"{target.reason(error) or type(error).__name__}") from None
    return pool
