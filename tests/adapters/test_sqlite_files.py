"""The SQLite state file: one owner, private modes, read-only checks before any write."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta

import pytest

from adapters.sqlite import SCHEMA_VERSION, SqliteStore
from pager_actors.domain import MonitoredService, RaiseAlert, decide
from pager_actors.ports import (
    StoreCorruptError,
    StoreError,
    StoreLockedError,
    Transition,
    TransitionRefusedError,
)
from tests.conftest import two_level_policy


def opened(service_id: str, message: str = "down", before: int = 0) -> Transition:
    decision = decide(MonitoredService(service_id, None, before), RaiseAlert(message),
                      two_level_policy(service_id), now=datetime(2026, 11, 30, tzinfo=UTC),
                      ack_timeout=timedelta(minutes=15))
    return Transition(0, decision.service, decision.effects)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_beside(path) -> set[str]:
    return {p.name for p in path.parent.iterdir()}


def test_a_second_store_on_the_same_file_is_refused_while_the_first_is_open(tmp_path):
    """One owner per state file: the second opener gets StoreLockedError naming the file."""
    path = tmp_path / "pager.db"
    first = SqliteStore(path)
    first.commit([opened("checkout")])
    before = digest(path)
    with pytest.raises(StoreLockedError, match=rf"{path}: .*in use by another pager \(pid "):
        SqliteStore(path)
    assert digest(path) == before
    first.close()
    SqliteStore(path).close()  # released on close


def test_new_files_are_private_whatever_the_umask(tmp_path):
    """The database, its -wal and -shm, and the lock file are created 0600."""
    old = os.umask(0)
    try:
        store = SqliteStore(tmp_path / "pager.db")
        store.commit([opened("checkout")])
        names = {"pager.db", "pager.db-wal", "pager.db-shm", "pager.db.lock"}
        assert names <= files_beside(tmp_path / "pager.db")
        for name in names:
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        store.close()
    finally:
        os.umask(old)


def test_a_missing_directory_is_named_as_such(tmp_path):
    """No 'not a readable pager store' for a path whose directory does not exist."""
    with pytest.raises(StoreError, match=r"directory .* does not exist") as refused:
        SqliteStore(tmp_path / "nowhere" / "pager.db")
    assert "not a readable" not in str(refused.value)


def test_a_foreign_database_is_left_byte_for_byte_unchanged(tmp_path):
    """Someone else's SQLite file (rollback journal) is refused and not switched to WAL."""
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(StoreCorruptError, match="no pager schema version"):
        SqliteStore(path)
    assert digest(path) == before
    assert files_beside(path) == {"other.db", "other.db.lock"}


def test_a_newer_schema_is_left_byte_for_byte_unchanged(tmp_path):
    """A file from a newer program is refused before anything is written to it."""
    path = tmp_path / "future.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)
    assert digest(path) == before


def test_a_damaged_page_is_refused_with_a_clear_error(tmp_path):
    """A file whose pages were overwritten is refused by the read-only check, unchanged."""
    path = tmp_path / "pager.db"
    store = SqliteStore(path)
    for i in range(300):
        store.commit([opened(f"service-{i}", "x" * 200)])
    store.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 3:page * 3 + 600] = b"\xa5" * 600  # scribble over a b-tree page
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(StoreCorruptError, match="not a readable pager store"):
        SqliteStore(path)
    assert digest(path) == before


def test_a_text_file_is_refused_unchanged(tmp_path):
    """A file that is not SQLite at all is named as such."""
    path = tmp_path / "notes.db"
    path.write_text("remember the milk\n" * 300)
    with pytest.raises(StoreCorruptError, match="not an SQLite file"):
        SqliteStore(path)
    assert path.read_text() == "remember the milk\n" * 300


def test_disk_full_is_said_plainly_and_nothing_is_half_written(tmp_path):
    """SQLITE_FULL reaches the caller as 'disk full', not 'cannot rollback'."""
    store = SqliteStore(tmp_path / "pager.db")
    store.commit([opened("first")])
    store._writer.execute("PRAGMA max_page_count = 1")
    with pytest.raises(StoreError, match="disk full") as refused:
        store.commit([opened(f"s{i}", "y" * 3000) for i in range(50)])
    assert "rollback" not in str(refused.value)
    assert store.load("s0") is None and store.load("first") is not None
    store._writer.execute("PRAGMA max_page_count = 1073741823")
    store.probe()
    store.commit([opened("s0")])
    store.close()


def test_a_transition_sqlite_cannot_hold_is_refused_by_service(tmp_path):
    """A value SQLite cannot hold (an integer past 64 bits) is refused as that service's."""
    store = SqliteStore(tmp_path / "pager.db")
    with pytest.raises(TransitionRefusedError) as refused:
        store.commit([opened("good"), opened("bad", before=2**63)])
    assert refused.value.service_id == "bad"
    assert store.load("good") is None  # the whole call was rolled back
    store.commit([opened("good")])
    store.close()
