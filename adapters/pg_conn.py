"""A PostgreSQL database as the forwarder reaches it: `PostgresTarget`'s settings and masked
errors (adapters/postgres.py), and connections set up like the store's."""

from __future__ import annotations

from typing import Any

import psycopg

from adapters.postgres import PostgresTarget, configure_session
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
        """A new connection, its session set up (UTC, bounded statements); StoreError with
        the masked reason if PostgreSQL cannot be reached or refuses."""
        try:
            db: Connection = psycopg.connect(**self._target.params, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: cannot connect: {self.reason(error)}") from None
        try:
            configure_session(db)
            db.autocommit = autocommit
        except psycopg.Error as error:
            db.close()
            raise StoreError(f"{self.where}: cannot set up the connection: "
                             f"{self.reason(error)}") from None
        return db
