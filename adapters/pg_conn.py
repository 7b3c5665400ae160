"""One PostgreSQL database as the cluster's adapters reach it: its connection settings, and
PostgreSQL's words about a failure with the password masked.

`PostgresStore` keeps its own copy of the same habits (it came first); this module
serves the adapters written since, so none of them ever prints a DSN's password.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from adapters.postgres import IDLE_IN_TRANSACTION_TIMEOUT, STATEMENT_TIMEOUT
from pager_actors.ports import StoreError

Connection = psycopg.Connection[tuple[Any, ...]]

# What each connection is given unless the URL says otherwise (as PostgresStore's): a dead
# server or network is noticed in seconds, not when TCP gives up (minutes).
CONNECTION_DEFAULTS = {"connect_timeout": "5", "keepalives": "1", "keepalives_idle": "10",
                       "keepalives_interval": "5", "keepalives_count": "3",
                       "tcp_user_timeout": "15000"}


class Database:
    """Where to connect, and how to talk about it without its password.

    `where` names the server and database for messages; `reason(error)` is an
    error's first line with the password replaced by `****`.
    """

    def __init__(self, dsn: str, application_name: str) -> None:
        try:
            given = conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreError("not a PostgreSQL URL or connection string (its text is not "
                             "shown: it may hold a password)") from None
        self._params: dict[str, Any] = {**CONNECTION_DEFAULTS,
                                        "application_name": application_name, **given}
        self._secret = str(given.get("password") or "")
        host = str(given.get("host") or given.get("hostaddr") or "localhost")
        self.where = (f"PostgreSQL at {host}:{given.get('port') or 5432}/"
                      f"{given.get('dbname') or given.get('user') or ''}")

    def reason(self, error: BaseException) -> str:
        """PostgreSQL's own words (first line), never the password."""
        text = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if self._secret:
            text = text.replace(self._secret, "****")
        return text

    def connect(self, *, autocommit: bool) -> Connection:
        """A new connection, its session set up (UTC, bounded statements); StoreError with
        the masked reason if PostgreSQL cannot be reached or refuses."""
        try:
            db: Connection = psycopg.connect(**self._params, autocommit=True)
        except psycopg.Error as error:
            raise StoreError(f"{self.where}: cannot connect: {self.reason(error)}") from None
        try:
            db.execute("SET TIME ZONE 'UTC'")
            db.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
            db.execute(f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
            db.autocommit = autocommit
        except psycopg.Error as error:
            db.close()
            raise StoreError(f"{self.where}: cannot set up the connection: "
                             f"{self.reason(error)}") from None
        return db

