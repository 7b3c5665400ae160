"""The store suite's fixtures: every contract test runs on each store, memory, SQLite and
PostgreSQL (a fresh database each test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.memory import InMemoryStore
from adapters.postgres import PostgresStore
from adapters.sqlite import SqliteStore
from pager_actors.ports import StateStore

STORES = ["memory", "sqlite", "postgres"]
DURABLE_STORES = ["sqlite", "postgres"]


@pytest.fixture
def memory_clock() -> Callable[[], datetime]:
    """The wall clock InMemoryStore stamps deliveries with; a module may fix it."""
    return lambda: datetime.now(UTC)


def open_store(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
               memory_clock: Callable[[], datetime]) -> Callable[[], StateStore]:
    """A function opening a store of `kind`, on the same file or database each call."""
    if kind == "memory":
        return lambda: InMemoryStore(clock=memory_clock)
    if kind == "sqlite":
        return lambda: SqliteStore(tmp_path / "pager.db")
    dsn = request.getfixturevalue("pg_dsn")  # only the PostgreSQL runs need the server
    return lambda: PostgresStore(dsn)


@pytest.fixture(params=STORES)
def store(request, tmp_path, memory_clock) -> Iterator[StateStore]:
    """A new, empty store of each kind."""
    store = open_store(request.param, request, tmp_path, memory_clock)()
    yield store
    store.close()


@pytest.fixture(params=DURABLE_STORES)
def reopen(request, tmp_path, memory_clock) -> Iterator[Callable[[], StateStore]]:
    """Opens a durable store, on the same file or database each call (a restart); every
    store it opened is closed after the test."""
    opener = open_store(request.param, request, tmp_path, memory_clock)
    opened: list[StateStore] = []

    def again() -> StateStore:
        opened.append(opener())
        return opened[-1]

    yield again
    for store in opened:
        store.close()
